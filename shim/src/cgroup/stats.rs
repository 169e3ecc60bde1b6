//! Task.Stats: the cgroup's counters in the metrics types containerd's
//! runc shim returns (`io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`), which `ctr task metrics` and the
//! CRI's ContainerStats decode.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::descriptor::field_descriptor_proto::Type;
use containerd_shim::protos::protobuf::reflect::ReflectValueBox;

use super::Cgroup;

impl Cgroup {
    /// The metrics of this cgroup, as the message containerd expects.
    pub fn stats(&self) -> Box<dyn MessageDyn> {
        match self.v2() {
            false => Box::new(stats_v1(self)),
            true => Box::new(stats_v2(self)),
        }
    }
}

/// A file of `key value` lines, such as memory.stat or cpu.stat.
fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once(' ')?;
        Some((key, value.trim().parse().ok()?))
    })
}

/// Sets each `u64` field of `message` named like a key of `text` (after
/// `rename`); keys without such a field are skipped (v1's memory.stat has
/// a `swap` key where the message has a `swap` entry of another type).
fn fill(message: &mut dyn MessageDyn, text: &str, rename: &dyn Fn(&str) -> String) {
    let descriptor = message.descriptor_dyn();
    for (key, value) in flat_keyed(text) {
        if let Some(field) = descriptor.field_by_name(&rename(key))
            && field.proto().type_() == Type::TYPE_UINT64
        {
            field.set_singular_field(message, ReflectValueBox::U64(value));
        }
    }
}

fn number(cg: &Cgroup, controller: &str, file: &str) -> u64 {
    let text = cg.read(controller, file).unwrap_or_default();
    match text.as_str() {
        "max" => u64::MAX,
        text => text.parse().unwrap_or(0),
    }
}

/// The current number of tasks and the limit (0 for none, as runc's shim).
fn pids_of(cg: &Cgroup) -> (u64, u64) {
    let limit = match number(cg, "pids", "pids.max") {
        u64::MAX => 0,
        limit => limit,
    };
    (number(cg, "pids", "pids.current"), limit)
}

fn stats_v1(cg: &Cgroup) -> v1::Metrics {
    let mut metrics = v1::Metrics::new();
    let pids = metrics.pids.mut_or_insert_default();
    (pids.current, pids.limit) = pids_of(cg);

    let cpu = metrics.cpu.mut_or_insert_default();
    let usage = cpu.usage.mut_or_insert_default();
    usage.total = number(cg, "cpuacct", "cpuacct.usage");
    // cpuacct.stat counts USER_HZ ticks; the metrics want nanoseconds.
    let ticks = cg.read("cpuacct", "cpuacct.stat").unwrap_or_default();
    for (key, value) in flat_keyed(&ticks) {
        let nanos = value * 10_000_000;
        match key {
            "user" => usage.user = nanos,
            "system" => usage.kernel = nanos,
            _ => {}
        }
    }
    usage.per_cpu = cg
        .read("cpuacct", "cpuacct.usage_percpu")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let throttling = cpu.throttling.mut_or_insert_default();
    let stat = cg.read("cpu", "cpu.stat").unwrap_or_default();
    for (key, value) in flat_keyed(&stat) {
        match key {
            "nr_periods" => throttling.periods = value,
            "nr_throttled" => throttling.throttled_periods = value,
            "throttled_time" => throttling.throttled_time = value,
            _ => {}
        }
    }

    let memory = metrics.memory.mut_or_insert_default();
    let stat = cg.read("memory", "memory.stat").unwrap_or_default();
    fill(memory, &stat, &|key| {
        let key = key
            .replace("pgpgin", "pg_pg_in")
            .replace("pgpgout", "pg_pg_out")
            .replace("pgmajfault", "pg_maj_fault")
            .replace("pgfault", "pg_fault");
        key.replace("hierarchical_memsw_limit", "hierarchical_swap_limit")
    });
    let entry = |prefix: &str| {
        let mut e = v1::MemoryEntry::new();
        e.usage = number(cg, "memory", &format!("{prefix}usage_in_bytes"));
        e.limit = number(cg, "memory", &format!("{prefix}limit_in_bytes"));
        e.max = number(cg, "memory", &format!("{prefix}max_usage_in_bytes"));
        e.failcnt = number(cg, "memory", &format!("{prefix}failcnt"));
        e
    };
    memory.usage = Some(entry("memory.")).into();
    memory.swap = Some(entry("memory.memsw.")).into();
    memory.kernel = Some(entry("memory.kmem.")).into();
    memory.kernel_tcp = Some(entry("memory.kmem.tcp.")).into();

    let oom = metrics.memory_oom_control.mut_or_insert_default();
    fill(
        oom,
        &cg.read("memory", "memory.oom_control").unwrap_or_default(),
        &str::to_string,
    );
    metrics
}

fn stats_v2(cg: &Cgroup) -> v2::Metrics {
    let mut metrics = v2::Metrics::new();
    let pids = metrics.pids.mut_or_insert_default();
    (pids.current, pids.limit) = pids_of(cg);
    let cpu = metrics.cpu.mut_or_insert_default();
    fill(
        cpu,
        &cg.read("cpu", "cpu.stat").unwrap_or_default(),
        &str::to_string,
    );
    let memory = metrics.memory.mut_or_insert_default();
    fill(
        memory,
        &cg.read("memory", "memory.stat").unwrap_or_default(),
        &str::to_string,
    );
    memory.usage = number(cg, "memory", "memory.current");
    memory.usage_limit = number(cg, "memory", "memory.max");
    memory.swap_usage = number(cg, "memory", "memory.swap.current");
    memory.swap_limit = number(cg, "memory", "memory.swap.max");
    memory.max_usage = number(cg, "memory", "memory.peak");
    let events = metrics.memory_events.mut_or_insert_default();
    fill(
        events,
        &cg.read("memory", "memory.events").unwrap_or_default(),
        &str::to_string,
    );
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;
    use std::path::Path;

    fn put(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v2_tree_becomes_v2_metrics() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            &[
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
                (
                    "cpu.stat",
                    "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
                ),
                (
                    "memory.stat",
                    "anon 4096\nfile 8192\npgfault 7\nunknown_key 1\n",
                ),
                ("memory.current", "12288\n"),
                ("memory.max", "67108864\n"),
                ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
            ],
        );
        let cg = Cgroup::at(vec![(dir.path().to_path_buf(), vec![])], false);
        let any = containerd_shim::util::convert_to_any(cg.stats()).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!((m.cpu.usage_usec, m.cpu.system_usec), (1500, 500));
        assert_eq!(
            (m.memory.anon, m.memory.file, m.memory.pgfault),
            (4096, 8192, 7)
        );
        assert_eq!((m.memory.usage, m.memory.usage_limit), (12288, 67108864));
        assert_eq!(m.memory_events.oom_kill, 1);
    }

    #[test]
    fn v1_tree_becomes_v1_metrics() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            &[
                ("pids.current", "1\n"),
                ("pids.max", "64\n"),
                ("cpuacct.usage", "123456\n"),
                ("cpuacct.stat", "user 2\nsystem 1\n"),
                ("cpuacct.usage_percpu", "100000 23456 \n"),
                (
                    "memory.stat",
                    "cache 10\nrss 20\nswap 0\npgpgin 5\ntotal_pgfault 9\n",
                ),
                ("memory.usage_in_bytes", "30\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        let all = vec!["pids", "cpu", "cpuacct", "memory"];
        let cg = Cgroup::at(vec![(dir.path().to_path_buf(), all)], true);
        let any = containerd_shim::util::convert_to_any(cg.stats()).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (1, 64));
        assert_eq!(m.cpu.usage.total, 123456);
        assert_eq!(
            (m.cpu.usage.user, m.cpu.usage.kernel),
            (20_000_000, 10_000_000)
        );
        assert_eq!(m.cpu.usage.per_cpu, [100000, 23456]);
        let mem = &m.memory;
        assert_eq!(
            (mem.cache, mem.rss, mem.pg_pg_in, mem.total_pg_fault),
            (10, 20, 5, 9)
        );
        assert_eq!((mem.usage.usage, mem.usage.limit), (30, 67108864));
        assert_eq!(m.memory_oom_control.oom_kill, 2);
    }
}
