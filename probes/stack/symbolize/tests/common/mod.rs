//! Test programs: compiled with `cc` into a temp dir, run, and killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A program that prints the address of `gg_hot_function_1234` and of `main`, then sleeps.
pub const HOT_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int gg_hot_function_1234(int x) {
    volatile int acc = 0;
    for (int i = 0; i < x; i++) acc += i;
    return acc;
}
int main(void) {
    printf("%p %p\n", (void *)gg_hot_function_1234, (void *)main);
    fflush(stdout);
    gg_hot_function_1234(10);
    for (;;) pause();
}
"#;

/// A program whose `gg_outer_func_8765` has `gg_inlined_leaf_4321` inlined into it.
pub const INLINE_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
volatile int gg_sink[16];
static inline __attribute__((always_inline)) int gg_inlined_leaf_4321(int x) {
    int acc = 0;
    for (int i = 0; i < x; i++) acc += gg_sink[i & 15] * i;
    return acc;
}
__attribute__((noinline)) int gg_outer_func_8765(int x) {
    int r = gg_inlined_leaf_4321(x);
    gg_sink[3] = r;
    return r + gg_sink[5];
}
int main(void) {
    printf("%p %p\n", (void *)gg_outer_func_8765, (void *)main);
    fflush(stdout);
    gg_outer_func_8765(3);
    for (;;) pause();
}
"#;

/// A fake JIT: an anonymous executable page described by `/tmp/perf-<its pid>.map`
/// (`gg_fake_jit_fn_5678`), or with `symlink:<target>` a perf map that is a symbolic link.
pub const JIT_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return 1;
    memset(code, 0xc3, 4096);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    unlink(path);
    if (argc > 1 && strncmp(argv[1], "symlink:", 8) == 0) {
        if (symlink(argv[1] + 8, path)) return 2;
    } else {
        FILE *f = fopen(path, "w");
        if (!f) return 3;
        fprintf(f, "%lx 100 gg_fake_jit_fn_5678\n", (unsigned long)code);
        fclose(f);
    }
    printf("%p\n", (void *)code);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// A fake JIT whose perf map (`gg_late_jit_fn_2468`) is written only after a byte on stdin;
/// prints the code's address before and again after writing it.
pub const LATE_JIT_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return 1;
    memset(code, 0xc3, 4096);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    unlink(path);
    printf("%p\n", (void *)code);
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1) return 2;
    FILE *f = fopen(path, "w");
    if (!f) return 3;
    fprintf(f, "%lx 100 gg_late_jit_fn_2468\n", (unsigned long)code);
    fclose(f);
    printf("%p\n", (void *)code);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// JIT code in a memfd mapping (not an ELF file), described by the perf map if argv[1] is `map`.
pub const MEMFD_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = memfd_create("gg-jit", 0);
    unsigned char buf[8192];
    memset(buf, 0xc3, sizeof buf);
    if (fd < 0 || write(fd, buf, sizeof buf) != sizeof buf) return 1;
    unsigned char *code = mmap(NULL, sizeof buf, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    if (code == MAP_FAILED) return 2;
    if (argc > 1 && strcmp(argv[1], "map") == 0) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
        FILE *f = fopen(path, "w");
        if (!f) return 3;
        fprintf(f, "%lx 1000 gg_memfd_jit_fn\n", (unsigned long)code + 0x1000);
        fclose(f);
    }
    printf("%p\n", (void *)code);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// Prints the address of `gg_hot_function_1234`, waits for a byte on stdin, then execs argv[1].
pub const EXEC_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int gg_hot_function_1234(int x) {
    volatile int acc = 0;
    for (int i = 0; i < x; i++) acc += i;
    return acc;
}
int main(int argc, char **argv) {
    printf("%p\n", (void *)gg_hot_function_1234);
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1 || argc < 2) return 4;
    execv(argv[1], argv + 1);
    return 5;
}
"#;

/// Like [`HOT_C`] with another function name.
pub const OTHER_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int gg_other_function_999(int x) {
    volatile int acc = 1;
    for (int i = 0; i < x; i++) acc *= i;
    return acc;
}
int main(void) {
    printf("%p %p\n", (void *)gg_other_function_999, (void *)main);
    fflush(stdout);
    gg_other_function_999(10);
    for (;;) pause();
}
"#;

/// Compiles `src` (language from `compiler`: `cc` or `c++`) into `dir/name`.
pub fn compile_with(compiler: &str, dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let ext = if compiler == "c++" { "cc" } else { "c" };
    let src_path = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src_path, src).expect("write source");
    let out = dir.join(name);
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src_path)
        .status()
        .expect("run the compiler");
    assert!(status.success(), "{compiler} {flags:?} {name} failed");
    out
}

/// Compiles C.
pub fn compile(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    compile_with("cc", dir, name, src, flags)
}

/// Runs `strip` on `path`.
pub fn strip(path: &Path) {
    let status = Command::new("strip").arg(path).status().expect("run strip");
    assert!(status.success(), "strip failed");
}

/// A running test program and the hex addresses of its first output line.
pub struct Prog {
    pub child: Child,
    reader: Option<BufReader<ChildStdout>>,
    pub pid: u32,
    pub addrs: Vec<u64>,
    /// More processes to kill on drop (a namespace's init).
    pub also_kill: Vec<u32>,
    /// Files to remove on drop (perf maps in /tmp).
    pub cleanup: Vec<PathBuf>,
}

impl Prog {
    pub fn spawn(mut cmd: Command) -> Prog {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn test program");
        let pid = child.id();
        let mut reader = child.stdout.take().map(BufReader::new);
        let line = read_line(&mut reader);
        let addrs = line
            .split_whitespace()
            .map(|a| {
                u64::from_str_radix(a.trim_start_matches("0x"), 16)
                    .unwrap_or_else(|_| panic!("not an address: {a:?} in {line:?}"))
            })
            .collect();
        Prog {
            child,
            reader,
            pid,
            addrs,
            also_kill: Vec::new(),
            cleanup: Vec::new(),
        }
    }

    /// Reads the next output line (after an exec).
    pub fn next_addrs(&mut self) -> Vec<u64> {
        let line = read_line(&mut self.reader);
        line.split_whitespace()
            .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).expect("address"))
            .collect()
    }

    /// Writes one byte to the program's stdin (EXEC_C execs, LATE_JIT_C writes its perf map).
    pub fn poke(&mut self) {
        use std::io::Write;
        self.child
            .stdin
            .as_mut()
            .expect("stdin piped")
            .write_all(b"x")
            .expect("write to the test program");
    }

    /// Kills the program and reaps it.
    pub fn kill(&mut self) {
        for pid in &self.also_kill {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        self.kill();
        for path in &self.cleanup {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads one line of the child's stdout, failing after 20 s.
fn read_line(slot: &mut Option<BufReader<ChildStdout>>) -> String {
    let mut reader = slot.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send((line, reader));
    });
    let (line, reader) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("test program printed nothing within 20 s");
    *slot = Some(reader);
    assert!(!line.is_empty(), "test program exited without output");
    line
}

/// `cmd` for a program path.
pub fn cmd(path: &Path) -> Command {
    Command::new(path)
}

/// The `(start, offset)` of the mapping of `pid` containing `addr`, and its path.
pub fn mapping_of(pid: u32, addr: u64) -> Option<(u64, u64, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let (s, e) = range.split_once('-')?;
        let (s, e) = (
            u64::from_str_radix(s, 16).ok()?,
            u64::from_str_radix(e, 16).ok()?,
        );
        if (s..e).contains(&addr) {
            let path = fields.nth(2).unwrap_or("").to_string();
            return Some((s, offset, path));
        }
    }
    None
}
