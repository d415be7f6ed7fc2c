//! `kafkaprobe`: Kafka records and bytes produced and fetched per topic, client and broker
//! (upstream's kafkaprobe table; docs/probes/l7.md, "kafkaprobe").

fn main() {
    l7probe::app::main(l7probe::app::Mode::Kafka);
}
