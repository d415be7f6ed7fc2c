//! The symbolizer against real processes: compiled test programs, namespaces, perf maps, kallsyms.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{
    cmd, compile, compile_with, mapping_of, strip, Prog, EXEC_C, HOT_C, INLINE_C, JIT_C,
    LATE_JIT_C, MEMFD_C, OTHER_C,
};
use stack_symbolize::{Config, Resolved, Symbolizer, UNKNOWN};
use tempfile::TempDir;

fn tempdir() -> TempDir {
    // Not under /tmp: the pid-namespace test mounts a tmpfs over /tmp.
    TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn names(r: &Resolved) -> Vec<&str> {
    r.frames.iter().map(|f| &*f.name).collect()
}

fn one(sym: &mut Symbolizer, pid: u32, addr: u64) -> Resolved {
    let mut out = sym.user(pid, &[addr]);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn symbolizer_can_move_to_another_thread() {
    fn send<T: Send>(_: &T) {}
    send(&Symbolizer::new(Config::default()));
}

#[test]
fn function_and_main_of_an_unoptimised_binary() {
    let dir = tempdir();
    let prog = compile(dir.path(), "hot", HOT_C, &["-g", "-O0"]);
    let p = Prog::spawn(cmd(&prog));
    let (hot, main) = (p.addrs[0], p.addrs[1]);

    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &[hot + 4, main + 1, hot + 4]);
    assert_eq!(out.len(), 3);
    assert!(out[0].found, "{out:?}");
    assert_eq!(names(&out[0]), ["gg_hot_function_1234"]);
    assert!(!out[0].frames[0].inlined && !out[0].frames[0].jit);
    assert_eq!(names(&out[1]), ["main"]);
    assert_eq!(out[2], out[0]);
    // The file each address lies in, for cached answers too.
    assert_eq!(out[0].module.as_deref(), Some("hot"), "{out:?}");
    assert_eq!(out[1].module.as_deref(), Some("hot"));

    let again = one(&mut sym, p.pid, hot + 4);
    assert_eq!(again, out[0]);
    assert_eq!(again.module.as_deref(), Some("hot"));
    let stats = sym.stats();
    assert_eq!(stats.lookups, 4);
    assert_eq!(stats.cache_hits, 1, "{stats:?}");
    assert_eq!(stats.misses, 0);
    assert_eq!(stats.cached_pids, 1);
    assert_eq!(stats.cached_addrs, 2);
    assert!(stats.symbolize_ns > 0);
    assert!(stats.open_files >= 1);
}

#[test]
fn inlined_function_follows_its_caller() {
    let dir = tempdir();
    let prog = compile(dir.path(), "inl", INLINE_C, &["-g", "-O2"]);
    let p = Prog::spawn(cmd(&prog));
    let outer = p.addrs[0];

    let mut sym = Symbolizer::new(Config::default());
    let addrs: Vec<u64> = (0..96).map(|off| outer + off).collect();
    let out = sym.user(p.pid, &addrs);
    let mut seen_inlined = false;
    for r in out.iter().filter(|r| r.found && r.frames.len() > 1) {
        assert_eq!(&*r.frames[0].name, "gg_outer_func_8765", "{r:?}");
        assert!(!r.frames[0].inlined);
        assert!(r.frames[1..].iter().all(|f| f.inlined), "{r:?}");
        seen_inlined |= &*r.frames[1].name == "gg_inlined_leaf_4321";
    }
    assert!(
        seen_inlined,
        "no address showed the inlined frame: {out:#?}"
    );
    assert_eq!(&*out[0].frames[0].name, "gg_outer_func_8765");

    // Without DWARF the same addresses give the outer function only.
    let mut plain = Symbolizer::new(Config {
        debug_syms: false,
        ..Config::default()
    });
    let out = plain.user(p.pid, &addrs);
    assert!(out.iter().all(|r| r.frames.len() == 1), "{out:#?}");
}

#[test]
fn stripped_binary_misses_symtab_functions_but_keeps_dynsym_ones() {
    let dir = tempdir();
    let stripped = compile(dir.path(), "gg_stripped", HOT_C, &["-O0"]);
    strip(&stripped);
    let p = Prog::spawn(cmd(&stripped));
    let hot = p.addrs[0];

    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, p.pid, hot + 4);
    assert!(!r.found, "{r:?}");
    let (start, offset, path) = mapping_of(p.pid, hot + 4).expect("mapped");
    assert!(path.ends_with("gg_stripped"), "{path}");
    let expected = format!("gg_stripped+{:#x}", hot + 4 - start + offset);
    assert_eq!(names(&r), [expected.as_str()]);
    assert_eq!(
        r.module.as_deref(),
        Some("gg_stripped"),
        "a miss names its file"
    );
    assert_eq!(sym.stats().misses, 1);

    let exported = compile(dir.path(), "gg_exported", HOT_C, &["-O0", "-rdynamic"]);
    strip(&exported);
    let q = Prog::spawn(cmd(&exported));
    let r = one(&mut sym, q.pid, q.addrs[0] + 4);
    assert!(r.found, "{r:?}");
    assert_eq!(names(&r), ["gg_hot_function_1234"]);
    assert_eq!(names(&one(&mut sym, q.pid, q.addrs[1] + 1)), ["main"]);
}

#[test]
fn deleted_and_replaced_binary_still_resolves() {
    let dir = tempdir();
    let prog = compile(dir.path(), "gone", HOT_C, &["-O0", "-g"]);
    let p = Prog::spawn(cmd(&prog));
    fs::remove_file(&prog).expect("delete the running binary");
    // Another program at the same path: a lookup by path would read the wrong file.
    compile(dir.path(), "gone", OTHER_C, &["-O0", "-g"]);
    let maps = fs::read_to_string(format!("/proc/{}/maps", p.pid)).expect("maps");
    assert!(maps.contains("gone (deleted)"), "{maps}");

    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &[p.addrs[0] + 4, p.addrs[1] + 1]);
    assert_eq!(names(&out[0]), ["gg_hot_function_1234"], "{out:?}");
    assert_eq!(names(&out[1]), ["main"]);
}

#[test]
fn binary_of_another_mount_namespace_resolves() {
    let dir = tempdir();
    let prog = compile(dir.path(), "nsprog", HOT_C, &["-O0", "-g"]);
    let inside = format!("/mnt/gg-symbolize-test-{}", std::process::id());
    assert!(!Path::new(&inside).exists());
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none /mnt && cp \"$0\" {inside} && exec {inside}"
        ))
        .arg(&prog);
    let p = Prog::spawn(c);
    let (_, _, path) = mapping_of(p.pid, p.addrs[0]).expect("mapped");
    assert_eq!(path, inside, "runs the copy only its namespace sees");
    assert!(!Path::new(&inside).exists());

    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &[p.addrs[0] + 4, p.addrs[1] + 1]);
    assert_eq!(names(&out[0]), ["gg_hot_function_1234"], "{out:?}");
    assert_eq!(names(&out[1]), ["main"]);
}

#[test]
fn perf_map_names_jit_code() {
    let dir = tempdir();
    let prog = compile(dir.path(), "jit", JIT_C, &["-O0"]);
    let mut p = Prog::spawn(cmd(&prog));
    p.cleanup.push(format!("/tmp/perf-{}.map", p.pid).into());
    let code = p.addrs[0];

    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &[code + 0x10, code + 0x100, code + 0x200]);
    assert!(out[0].found, "{out:?}");
    assert_eq!(names(&out[0]), ["gg_fake_jit_fn_5678"]);
    assert!(out[0].frames[0].jit);
    assert_eq!(out[0].module, None, "JIT code lies in no file");
    assert!(!out[1].found, "the entry is 0x100 long: {out:?}");
    assert_eq!(names(&out[1]), [UNKNOWN]);
    let stats = sym.stats();
    assert_eq!(stats.perf_map_reads, 1);
    assert_eq!(stats.perf_map_entries, 1);
    assert_eq!(stats.jit_frames, 1);

    // Switched off: a miss.
    let mut off = Symbolizer::new(Config {
        perf_map: false,
        ..Config::default()
    });
    assert!(!one(&mut off, p.pid, code + 0x10).found);
}

#[test]
fn perf_map_of_another_pid_and_mount_namespace() {
    let dir = tempdir();
    let prog = compile(dir.path(), "nsjit", JIT_C, &["-O0"]);
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "-p",
        "-f",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "sh",
        "-c",
        // The program may live under /tmp (a checkout there): opened before the mount hides
        // it, and run through that descriptor.
        "exec 3<\"$0\" && mount -t tmpfs none /tmp && exec /proc/self/fd/3",
    ])
    .arg(&prog);
    let mut p = Prog::spawn(c);
    // The program is unshare's child, pid 1 of its namespace.
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", p.pid))
        .expect("children of unshare");
    let jit_pid: u32 = children.trim().parse().expect("one child");
    p.also_kill.push(jit_pid);
    let status = fs::read_to_string(format!("/proc/{jit_pid}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NStgid:") && l.ends_with("\t1")),
        "{status}"
    );
    let code = p.addrs[0];
    // A decoy where a namespace-blind lookup would look.
    let decoy = format!("/tmp/perf-{jit_pid}.map");
    fs::write(&decoy, format!("{code:x} 100 gg_decoy_wrong_namespace\n")).expect("decoy");
    p.cleanup.push(decoy.into());

    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, jit_pid, code + 8);
    assert_eq!(names(&r), ["gg_fake_jit_fn_5678"], "{:?}", sym.last_error());
    assert!(r.frames[0].jit);
}

#[test]
fn perf_map_symlink_is_not_followed() {
    let dir = tempdir();
    let prog = compile(dir.path(), "linkjit", JIT_C, &["-O0"]);
    // A link to a valid perf map naming the code: following it would resolve.
    let target = dir.path().join("secret.map");
    let mut c = cmd(&prog);
    c.arg(format!("symlink:{}", target.display()));
    let mut p = Prog::spawn(c);
    p.cleanup.push(format!("/tmp/perf-{}.map", p.pid).into());
    let code = p.addrs[0];
    fs::write(&target, format!("{code:x} 100 gg_leaked_secret\n")).expect("target");
    assert_eq!(
        fs::read_to_string(format!("/tmp/perf-{}.map", p.pid)).ok(),
        fs::read_to_string(&target).ok(),
        "the link works for an ordinary open"
    );

    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, p.pid, code + 8);
    assert!(!r.found, "{r:?}");
    assert_eq!(names(&r), [UNKNOWN]);
    assert_eq!(sym.stats().perf_map_refused, 1);
    assert!(sym
        .last_error()
        .is_some_and(|e| e.contains("symbolic link")));

    // To /etc/shadow: refused too, no panic.
    let mut c = cmd(&prog);
    c.arg("symlink:/etc/shadow");
    let mut q = Prog::spawn(c);
    q.cleanup.push(format!("/tmp/perf-{}.map", q.pid).into());
    let r = one(&mut sym, q.pid, q.addrs[0] + 8);
    assert_eq!(names(&r), [UNKNOWN]);
    assert_eq!(sym.stats().perf_map_refused, 2);
}

#[test]
fn memfd_code_is_a_miss_not_an_error_and_perf_map_names_it() {
    let dir = tempdir();
    let prog = compile(dir.path(), "memfd", MEMFD_C, &["-O0"]);
    let mut c = cmd(&prog);
    c.arg("map");
    let mut p = Prog::spawn(c);
    p.cleanup.push(format!("/tmp/perf-{}.map", p.pid).into());
    let code = p.addrs[0];
    let (_, _, path) = mapping_of(p.pid, code).expect("mapped");
    assert!(path.starts_with("/memfd:gg-jit"), "{path}");

    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &[code + 0x10, code + 0x1010]);
    assert!(!out[0].found);
    assert_eq!(names(&out[0]), ["memfd:gg-jit+0x10"], "{out:?}");
    assert_eq!(names(&out[1]), ["gg_memfd_jit_fn"]);
    assert!(out[1].frames[0].jit);
    let stats = sym.stats();
    assert_eq!(stats.errors, 0, "{:?}", sym.last_error());
    assert_eq!(stats.not_elf, 2, "{stats:?}");
}

#[test]
fn vdso_addresses_resolve() {
    let dir = tempdir();
    let prog = compile(dir.path(), "vdso", HOT_C, &["-O0"]);
    let p = Prog::spawn(cmd(&prog));
    let maps = fs::read_to_string(format!("/proc/{}/maps", p.pid)).expect("maps");
    let (start, end) = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split_whitespace().next()?.split_once('-'))
        .map(|(s, e)| {
            (
                u64::from_str_radix(s, 16).expect("start"),
                u64::from_str_radix(e, 16).expect("end"),
            )
        })
        .expect("vdso mapping");
    let addrs: Vec<u64> = (start..end).step_by(16).collect();
    let mut sym = Symbolizer::new(Config::default());
    let out = sym.user(p.pid, &addrs);
    let found: Vec<&str> = out
        .iter()
        .filter(|r| r.found)
        .map(|r| &*r.frames[0].name)
        .collect();
    assert!(
        found.iter().any(|n| n.contains("clock_gettime")),
        "{found:?}"
    );
    let missed = out
        .iter()
        .find(|r| !r.found)
        .expect("headers are no function");
    assert!(missed.frames[0].name.starts_with("[vdso]+0x"), "{missed:?}");
    assert_eq!(sym.stats().errors, 0, "{:?}", sym.last_error());
}

#[test]
fn kernel_function_from_kallsyms() {
    let kallsyms = fs::read_to_string("/proc/kallsyms").expect("kallsyms");
    let find = |name: &str| {
        kallsyms.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, kind, sym) = (f.next()?, f.next()?, f.next()?);
            (sym == name && kind.eq_ignore_ascii_case("t") && f.next().is_none())
                .then(|| u64::from_str_radix(addr, 16).ok())
                .flatten()
        })
    };
    let mut sym = Symbolizer::new(Config::default());
    let vfs_read = find("vfs_read").expect("vfs_read in kallsyms");
    let openat2 = find("do_sys_openat2").expect("do_sys_openat2 in kallsyms");
    let out = sym.kernel(&[vfs_read + 1, openat2 + 1, vfs_read + 1]);
    if vfs_read == 0 {
        // kptr_restrict hides addresses: misses, not errors.
        assert!(out.iter().all(|r| !r.found));
        assert_eq!(sym.stats().errors, 0);
        return;
    }
    assert_eq!(names(&out[0]), ["vfs_read"], "{out:?}");
    assert_eq!(names(&out[1]), ["do_sys_openat2"]);
    assert_eq!(out[2], out[0]);
    let again = sym.kernel(&[vfs_read + 1]);
    assert_eq!(names(&again[0]), ["vfs_read"]);
    let stats = sym.stats();
    assert_eq!((stats.lookups, stats.cache_hits, stats.misses), (4, 1, 0));
    assert_eq!(stats.cached_addrs, 2);
}

#[test]
fn retain_drops_an_exited_process() {
    let dir = tempdir();
    let prog = compile(dir.path(), "exits", HOT_C, &["-O0"]);
    let mut p = Prog::spawn(cmd(&prog));
    let mut sym = Symbolizer::new(Config::default());
    assert!(one(&mut sym, p.pid, p.addrs[0] + 4).found);
    sym.retain(alive);
    assert_eq!(sym.stats().cached_pids, 1, "still running");

    p.kill();
    sym.retain(alive);
    let stats = sym.stats();
    assert_eq!(stats.cached_pids, 0);
    assert_eq!(stats.cached_addrs, 0);
    assert_eq!(stats.open_files, 0);
    assert_eq!(stats.pids_dropped, 1);
}

#[test]
fn forget_drops_a_process() {
    let dir = tempdir();
    let prog = compile(dir.path(), "forgotten", HOT_C, &["-O0"]);
    let p = Prog::spawn(cmd(&prog));
    let mut sym = Symbolizer::new(Config::default());
    assert!(one(&mut sym, p.pid, p.addrs[0] + 4).found);
    sym.forget(p.pid);
    sym.forget(p.pid);
    let stats = sym.stats();
    assert_eq!(
        (stats.cached_pids, stats.cached_addrs, stats.pids_dropped),
        (0, 0, 1)
    );
    assert!(one(&mut sym, p.pid, p.addrs[0] + 4).found, "resolves again");
}

#[test]
fn unmapped_address_is_an_unknown_miss() {
    let dir = tempdir();
    let prog = compile(dir.path(), "unmapped", HOT_C, &["-O0"]);
    let p = Prog::spawn(cmd(&prog));
    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, p.pid, 0x10);
    assert!(!r.found);
    assert_eq!(names(&r), [UNKNOWN]);
    assert_eq!(sym.stats().misses, 1);
    assert_eq!(one(&mut sym, p.pid, 0x10), r);
    let stats = sym.stats();
    assert_eq!((stats.misses, stats.cache_hits, stats.errors), (2, 1, 0));

    // A process that does not exist (no error: it may have exited since), and pid 0.
    let r = one(&mut sym, u32::MAX - 1, 0x1000);
    assert_eq!(names(&r), [UNKNOWN]);
    assert_eq!(sym.stats().errors, 0, "{:?}", sym.last_error());
    assert_eq!(names(&one(&mut sym, 0, 0x1000)), [UNKNOWN]);
    assert!(sym.user(p.pid, &[]).is_empty());
}

#[test]
fn exec_in_the_same_pid_drops_stale_names() {
    let dir = tempdir();
    let first = compile(dir.path(), "first", EXEC_C, &["-O0"]);
    let second = compile(dir.path(), "second", OTHER_C, &["-O0"]);
    let mut c = cmd(&first);
    c.arg(&second);
    let mut p = Prog::spawn(c);
    let old = p.addrs[0] + 4;
    let mut sym = Symbolizer::new(Config::default());
    assert_eq!(names(&one(&mut sym, p.pid, old)), ["gg_hot_function_1234"]);

    use std::io::Write;
    p.child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"x")
        .expect("trigger exec");
    let now = p.next_addrs();
    sym.retain(alive);
    let r = one(&mut sym, p.pid, old);
    assert_ne!(names(&r), ["gg_hot_function_1234"], "stale name after exec");
    assert_eq!(sym.stats().pid_changes, 1);
    assert_eq!(
        names(&one(&mut sym, p.pid, now[0] + 4)),
        ["gg_other_function_999"]
    );
}

/// The executable mapping of `pid` whose path contains `module`: (start, end).
fn text_of(pid: u32, module: &str) -> (u64, u64) {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .find(|l| l.contains("r-xp") && l.contains(module))
        .and_then(|l| l.split_whitespace().next()?.split_once('-'))
        .map(|(s, e)| {
            (
                u64::from_str_radix(s, 16).expect("start"),
                u64::from_str_radix(e, 16).expect("end"),
            )
        })
        .expect("text mapping")
}

/// `n` addresses spread over `pid`'s libc text, `shift` bytes into each step.
fn libc_addrs(pid: u32, n: u64, shift: u64) -> Vec<u64> {
    let (start, end) = text_of(pid, "libc.so");
    let step = (end - start) / n;
    (0..n).map(|i| start + i * step + shift % step).collect()
}

#[test]
fn processes_of_one_binary_share_its_files_and_results() {
    let dir = tempdir();
    let prog = compile(dir.path(), "shared", EXEC_C, &["-O0", "-g"]);
    let other = compile(dir.path(), "shared_other", OTHER_C, &["-O0", "-g"]);
    let spawn = || {
        let mut c = cmd(&prog);
        c.arg(&other);
        Prog::spawn(c)
    };
    let (mut p1, mut p2, mut p3) = (spawn(), spawn(), spawn());
    let mut sym = Symbolizer::new(Config::default());
    let batch = |p: &Prog, shift: u64| -> Vec<u64> {
        let mut addrs = libc_addrs(p.pid, 64, shift);
        addrs.push(p.addrs[0] + 4);
        addrs
    };

    // The first process opens (parses) the binary and libc.
    let first = sym.user(p1.pid, &batch(&p1, 0));
    assert_eq!(names(&first[64]), ["gg_hot_function_1234"]);
    assert!(first.iter().filter(|r| r.found).count() > 50, "{first:?}");
    let opened = sym.stats().files_opened;
    assert_eq!(opened, 2, "{:?}", sym.stats());

    // The same offsets in another process: answered from the shared results, nothing opened.
    let second = sym.user(p2.pid, &batch(&p2, 0));
    assert_eq!(second, first);
    let stats = sym.stats();
    assert_eq!(stats.shared_hits, 65, "{stats:?}");
    assert_eq!(stats.cache_hits, 65);
    assert_eq!((stats.files_opened, stats.open_files), (opened, 2));

    // Other offsets in a third process: blazesym reuses the parse, through the first one's path.
    let third = sym.user(p3.pid, &batch(&p3, 8));
    assert!(third.iter().filter(|r| r.found).count() > 50, "{third:?}");
    assert_eq!(names(&third[64]), ["gg_hot_function_1234"]);
    let stats = sym.stats();
    assert_eq!((stats.files_opened, stats.path_switches), (opened, 0));
    assert_eq!(stats.open_files, 2);

    // The process whose paths blazesym knows the files by exits: the others still resolve,
    // through their own path, without a new parse (also before `retain` noticed the exit).
    p1.kill();
    let after_exit = sym.user(p2.pid, &batch(&p2, 16));
    assert!(after_exit.iter().filter(|r| r.found).count() > 50);
    assert_eq!(
        sym.user(p3.pid, &batch(&p3, 16)),
        after_exit,
        "p3 gets p2's results"
    );
    let stats = sym.stats();
    assert_eq!(stats.errors, 0, "{:?}", sym.last_error());
    assert_eq!(stats.files_opened, opened, "{stats:?}");
    assert!(stats.path_switches >= 1, "{stats:?}");
    sym.retain(alive);
    assert_eq!(sym.stats().pids_dropped, 1);

    // A period later, cached addresses read nothing.
    let reads = sym.stats().maps_reads;
    assert_eq!(sym.user(p3.pid, &batch(&p3, 8)), third);
    assert_eq!(sym.stats().maps_reads, reads);

    // p2 execs another binary: its addresses go through its new mappings (and the libc it
    // maps again is still shared).
    p2.poke();
    let now = p2.next_addrs();
    sym.retain(alive);
    let stale = one(&mut sym, p2.pid, p2.addrs[0] + 4);
    assert_ne!(
        names(&stale),
        ["gg_hot_function_1234"],
        "stale name after exec"
    );
    assert_eq!(
        names(&one(&mut sym, p2.pid, now[0] + 4)),
        ["gg_other_function_999"]
    );
    let stats = sym.stats();
    assert_eq!(stats.pid_changes, 1);
    assert_eq!(stats.files_opened, opened + 1, "the new binary: {stats:?}");
    let libc_again = sym.user(p2.pid, &libc_addrs(p2.pid, 64, 16));
    assert_eq!(libc_again[..], after_exit[..64]);
    assert_eq!(
        sym.stats().files_opened,
        opened + 1,
        "libc is not parsed again"
    );

    // p3, the last process of the first binary, still resolves new offsets of it.
    assert_eq!(
        names(&one(&mut sym, p3.pid, p3.addrs[0] + 5)),
        ["gg_hot_function_1234"]
    );
    assert_eq!(sym.stats().errors, 0, "{:?}", sym.last_error());

    // Once nobody maps a file, it and its results go.
    p2.kill();
    p3.kill();
    sym.retain(alive);
    let stats = sym.stats();
    assert_eq!((stats.cached_pids, stats.open_files), (0, 0), "{stats:?}");
    assert_eq!(stats.file_results, 0);
}

#[test]
fn perf_map_written_after_the_first_misses_names_them_next_period() {
    let dir = tempdir();
    let prog = compile(dir.path(), "late_jit", LATE_JIT_C, &["-O0"]);
    let mut p = Prog::spawn(cmd(&prog));
    p.cleanup.push(format!("/tmp/perf-{}.map", p.pid).into());
    let code = p.addrs[0];
    let mut sym = Symbolizer::new(Config::default());
    assert_eq!(names(&one(&mut sym, p.pid, code + 0x10)), [UNKNOWN]);
    sym.retain(alive);
    assert_eq!(names(&one(&mut sym, p.pid, code + 0x10)), [UNKNOWN]);

    // Retained every second with nothing new: no perf map or maps read, no rebuild.
    let before = sym.stats();
    for _ in 0..5 {
        sym.retain(alive);
        assert_eq!(names(&one(&mut sym, p.pid, code + 0x10)), [UNKNOWN]);
    }
    let stats = sym.stats();
    assert_eq!(stats.perf_map_reads, before.perf_map_reads);
    assert_eq!(stats.maps_reads, before.maps_reads);
    assert_eq!(stats.rebuilds, 0);

    p.poke();
    p.next_addrs();
    // Within the period the cached miss stands; the next period reads the new map.
    assert_eq!(names(&one(&mut sym, p.pid, code + 0x10)), [UNKNOWN]);
    sym.retain(alive);
    let r = one(&mut sym, p.pid, code + 0x10);
    assert_eq!(names(&r), ["gg_late_jit_fn_2468"], "{:?}", sym.last_error());
    assert!(r.frames[0].jit);
    assert_eq!(sym.stats().perf_map_reads, before.perf_map_reads + 1);
}

#[test]
fn caches_are_bounded() {
    let dir = tempdir();
    let prog = compile(dir.path(), "bounded", HOT_C, &["-O0"]);
    let a = Prog::spawn(cmd(&prog));
    let b = Prog::spawn(cmd(&prog));
    let mut sym = Symbolizer::new(Config {
        max_pids: 1,
        max_addrs_per_pid: 4,
        ..Config::default()
    });
    let addrs: Vec<u64> = (0..10).map(|i| a.addrs[0] + i).collect();
    let out = sym.user(a.pid, &addrs);
    assert!(out
        .iter()
        .all(|r| &*r.frames[0].name == "gg_hot_function_1234"));
    let stats = sym.stats();
    assert!(stats.cached_addrs <= 4, "{stats:?}");
    assert_eq!(stats.cache_resets, 1);

    assert!(one(&mut sym, b.pid, b.addrs[0] + 4).found);
    let stats = sym.stats();
    assert_eq!(
        (stats.cached_pids, stats.pid_evictions),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.cached_addrs, 1);
    assert_eq!(
        stats.open_files, 1,
        "the evicted process's file was released"
    );

    let mut few_files = Symbolizer::new(Config {
        max_open_files: 0,
        ..Config::default()
    });
    assert!(one(&mut few_files, a.pid, a.addrs[0] + 4).found);
    let stats = few_files.stats();
    assert_eq!((stats.rebuilds, stats.open_files), (1, 0));
    assert!(
        one(&mut few_files, a.pid, a.addrs[0] + 5).found,
        "works after a rebuild"
    );
}

#[test]
fn shared_results_are_bounded() {
    let dir = tempdir();
    let prog = compile(dir.path(), "few_results", HOT_C, &["-O0"]);
    let a = Prog::spawn(cmd(&prog));
    let b = Prog::spawn(cmd(&prog));
    let mut sym = Symbolizer::new(Config {
        max_file_results: 4,
        ..Config::default()
    });
    let addrs = |p: &Prog| -> Vec<u64> { (0..10).map(|i| p.addrs[0] + i).collect() };
    let out = sym.user(a.pid, &addrs(&a));
    assert!(out.iter().all(|r| names(r) == ["gg_hot_function_1234"]));
    let stats = sym.stats();
    assert!(stats.file_results <= 4, "{stats:?}");
    assert!(stats.cache_resets >= 2, "{stats:?}");
    // What was dropped is looked up again, for the process that had it cached too.
    assert_eq!(sym.user(b.pid, &addrs(&b)), out);
    assert_eq!(sym.user(a.pid, &addrs(&a)), out);
    assert!(sym.stats().file_results <= 4);
    assert_eq!(sym.stats().files_opened, 1, "the binary stays open");
}

#[test]
fn cpp_names_are_demangled() {
    let src = r#"
#include <cstdio>
#include <unistd.h>
namespace ggns {
__attribute__((noinline)) int hot_cpp(int x, double y) {
    volatile int a = 0;
    for (int i = 0; i < x; i++) a += i * (int)y;
    return a;
}
}
int main() {
    std::printf("%p\n", (void *)&ggns::hot_cpp);
    std::fflush(stdout);
    ggns::hot_cpp(3, 2.0);
    for (;;) pause();
}
"#;
    let dir = tempdir();
    let plain = compile_with("c++", dir.path(), "cpp_plain", src, &["-O0"]);
    let dwarf = compile_with("c++", dir.path(), "cpp_dwarf", src, &["-O0", "-g"]);
    let mut sym = Symbolizer::new(Config::default());
    for prog in [plain, dwarf] {
        let p = Prog::spawn(cmd(&prog));
        let r = one(&mut sym, p.pid, p.addrs[0] + 4);
        assert_eq!(
            names(&r),
            ["ggns::hot_cpp(int, double)"],
            "{}",
            prog.display()
        );
    }
}

#[test]
fn rust_names_are_demangled() {
    let src = r#"
mod gg_rust_mod {
    #[inline(never)]
    pub fn gg_rust_hot(x: u64) -> u64 {
        (0..x).fold(0, |a, b| a ^ b.wrapping_mul(31))
    }
}
fn main() {
    let f: fn(u64) -> u64 = gg_rust_mod::gg_rust_hot;
    println!("{:p}", f as *const ());
    std::hint::black_box(gg_rust_mod::gg_rust_hot(std::hint::black_box(5)));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
"#;
    let dir = tempdir();
    let src_path = dir.path().join("gg_rust_prog.rs");
    fs::write(&src_path, src).expect("source");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = dir.path().join("gg_rust_prog");
    let status = Command::new(rustc)
        .args(["-C", "opt-level=1", "-C", "debuginfo=0", "-o"])
        .arg(&out)
        .arg(&src_path)
        .status()
        .expect("rustc");
    assert!(status.success());
    let p = Prog::spawn(cmd(&out));
    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, p.pid, p.addrs[0] + 1);
    assert_eq!(
        names(&r),
        ["gg_rust_prog::gg_rust_mod::gg_rust_hot"],
        "{r:?}"
    );
}

/// Timing, not a check: `cargo test -p stack-symbolize --test symbolize -- --ignored
/// --nocapture measure` (use an optimised profile for representative figures).
#[test]
#[ignore]
fn measure_10k_libc_addresses() {
    use std::time::Instant;
    let dir = tempdir();
    let prog = compile(dir.path(), "measure", HOT_C, &["-O0"]);
    let p = Prog::spawn(cmd(&prog));
    let maps = fs::read_to_string(format!("/proc/{}/maps", p.pid)).expect("maps");
    let (start, end) = maps
        .lines()
        .find(|l| l.contains("r-xp") && l.contains("libc.so"))
        .and_then(|l| l.split_whitespace().next()?.split_once('-'))
        .map(|(s, e)| {
            (
                u64::from_str_radix(s, 16).expect("start"),
                u64::from_str_radix(e, 16).expect("end"),
            )
        })
        .expect("libc text mapping");
    let n = 10_000u64;
    let step = (end - start) / n;
    let set = |shift: u64| -> Vec<u64> { (0..n).map(|i| start + i * step + shift).collect() };
    let (a, b) = (set(0), set(step / 2));

    for debug_syms in [true, false] {
        let mut sym = Symbolizer::new(Config {
            debug_syms,
            ..Config::default()
        });
        let t = Instant::now();
        let out = sym.user(p.pid, &a);
        let cold = t.elapsed();
        let found = out.iter().filter(|r| r.found).count();
        let inlined = out.iter().filter(|r| r.frames.len() > 1).count();
        let t = Instant::now();
        sym.user(p.pid, &a);
        let warm = t.elapsed();
        let t = Instant::now();
        sym.user(p.pid, &b);
        let new_addrs = t.elapsed();
        println!(
            "libc, debug_syms={debug_syms}: 10k addresses cold {cold:?} ({found} found, {inlined} \
             with inlined frames), cached {warm:?}, 10k new addresses with libc already parsed \
             {new_addrs:?}; {:?}",
            sym.stats()
        );
    }

    let kallsyms = fs::read_to_string("/proc/kallsyms").expect("kallsyms");
    let text: Vec<u64> = kallsyms
        .lines()
        .filter(|l| l.contains(" T ") || l.contains(" t "))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .filter(|a| *a != 0)
        .collect();
    let kaddrs: Vec<u64> = text
        .iter()
        .step_by((text.len() / n as usize).max(1))
        .map(|a| a + 1)
        .take(n as usize)
        .collect();
    let mut sym = Symbolizer::new(Config::default());
    let t = Instant::now();
    let out = sym.kernel(&kaddrs);
    let cold = t.elapsed();
    let t = Instant::now();
    sym.kernel(&kaddrs);
    let warm = t.elapsed();
    println!(
        "kernel: {} addresses cold {cold:?} ({} found), cached {warm:?}",
        kaddrs.len(),
        out.iter().filter(|r| r.found).count()
    );
}

/// A real JVM's perf map (`jcmd <pid> Compiler.perfmap`, JDK 17+ writes `0x`-prefixed fields).
/// Ignored: needs `java` and `jcmd` and takes seconds.
#[test]
#[ignore]
fn java_perf_map_names_jit_code() {
    use std::time::{Duration, Instant};
    let dir = tempdir();
    let src = dir.path().join("GgSpin.java");
    fs::write(
        &src,
        r#"public class GgSpin {
    static long ggWork(long x) { long a = 0; for (long i = 0; i < x; i++) a += i * 31 ^ (a >>> 3); return a; }
    public static void main(String[] args) {
        System.out.println("0x" + Long.toHexString(ProcessHandle.current().pid()));
        System.out.flush();
        long s = 0;
        while (true) { s += ggWork(100000); if (s == 42) System.out.println(s); }
    }
}
"#,
    )
    .expect("source");
    let mut c = Command::new("java");
    c.arg(&src);
    let mut p = Prog::spawn(c);
    let pid = p.pid;
    p.cleanup.push(format!("/tmp/perf-{pid}.map").into());
    let deadline = Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let ok = Command::new("jcmd")
            .args([&pid.to_string(), "Compiler.perfmap"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("jcmd")
            .success();
        assert!(ok, "jcmd failed");
        let map = fs::read_to_string(format!("/tmp/perf-{pid}.map")).unwrap_or_default();
        let found = map
            .lines()
            .find(|l| l.ends_with("long GgSpin.ggWork(long)"))
            .map(|l| {
                let start = l.split_whitespace().next().expect("start");
                u64::from_str_radix(start.trim_start_matches("0x"), 16).expect("hex")
            });
        if let Some(start) = found {
            break start;
        }
        assert!(Instant::now() < deadline, "ggWork was not compiled");
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut sym = Symbolizer::new(Config::default());
    let r = one(&mut sym, pid, entry + 1);
    assert_eq!(
        names(&r),
        ["long GgSpin.ggWork(long)"],
        "{:?}",
        sym.last_error()
    );
    assert!(r.frames[0].jit);
    let stats = sym.stats();
    assert!(stats.perf_map_entries > 100, "{stats:?}");
    assert_eq!(stats.perf_map_invalid_lines, 0, "{stats:?}");
}

#[test]
fn debug_link_to_a_fifo_cannot_hang_the_symbolizer() {
    use std::time::{Duration, Instant};
    let dir = tempdir();
    let prog = compile(dir.path(), "linked", HOT_C, &["-O0"]);
    // A debug link to `linked.debug` next to the binary, which then becomes a FIFO: opening it
    // for reading blocks until a writer comes, which nobody does.
    let debug = dir.path().join("linked.debug");
    fs::write(&debug, b"placeholder").expect("debug file");
    let status = Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&prog)
        .status()
        .expect("objcopy");
    assert!(status.success());
    fs::remove_file(&debug).expect("rm");
    let status = Command::new("mkfifo").arg(&debug).status().expect("mkfifo");
    assert!(status.success());
    let p = Prog::spawn(cmd(&prog));

    let mut sym = Symbolizer::new(Config {
        call_timeout_ms: 1000,
        ..Config::default()
    });
    let t = Instant::now();
    let r = one(&mut sym, p.pid, p.addrs[0] + 4);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!r.found, "{r:?}");
    assert_eq!(sym.stats().timeouts, 1);
    // Later calls do not wait for the stuck one.
    let t = Instant::now();
    let r = sym.kernel(&[0]);
    assert_eq!(r.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(10));
    // Next period the file is read without DWARF, so without following its debug link.
    sym.retain(alive);
    let r = one(&mut sym, p.pid, p.addrs[0] + 4);
    assert_eq!(
        names(&r),
        ["gg_hot_function_1234"],
        "{:?}",
        sym.last_error()
    );
    assert_eq!(sym.stats().timeouts, 1);

    // Let the abandoned worker's open return.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&debug);
}

/// Timing, not a check: addresses of libc and of the binary in three processes of one binary,
/// one 16-address stack per call as stackprobe makes them: the same offsets in each process,
/// then new offsets in the third, then new offsets in the second after the first (whose paths
/// blazesym knows the files by) exited. With `max_open_files` 4, files counted per process
/// would exceed the bound. `cargo test -p stack-symbolize --test symbolize -- --ignored
/// --nocapture measure_three`.
#[test]
#[ignore]
fn measure_three_processes_of_one_binary() {
    use std::time::Instant;
    let dir = tempdir();
    let prog = compile(dir.path(), "measure3", HOT_C, &["-O0", "-g"]);
    let n = 2_000u64;
    let batch = |p: &Prog, shift: u64| -> Vec<u64> {
        let mut addrs = libc_addrs(p.pid, n, shift);
        addrs.extend((0..64).map(|i| p.addrs[0] + i));
        addrs
    };
    let run = |sym: &mut Symbolizer, p: &Prog, shift: u64| -> String {
        let t = Instant::now();
        let mut found = 0;
        for stack in batch(p, shift).chunks(16) {
            found += sym.user(p.pid, stack).iter().filter(|r| r.found).count();
        }
        format!("{:?} ({found} found)", t.elapsed())
    };
    for max_open_files in [Config::default().max_open_files, 4] {
        let mut procs: Vec<Prog> = (0..3).map(|_| Prog::spawn(cmd(&prog))).collect();
        let mut sym = Symbolizer::new(Config {
            max_open_files,
            ..Config::default()
        });
        let same: Vec<String> = procs.iter().map(|p| run(&mut sym, p, 0)).collect();
        let fresh = run(&mut sym, &procs[2], 8);
        procs[0].kill();
        let switched = run(&mut sym, &procs[1], 16);
        println!(
            "max_open_files {max_open_files}: same offsets {same:?}; new offsets {fresh}; new \
             offsets after the first process exited {switched}; {:?}",
            sym.stats()
        );
    }
}
