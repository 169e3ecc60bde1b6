//! `linux.resources` written into the container's cgroup, as runc writes
//! them: memory (limit, swap, reservation, swappiness, OOM killer), cpu
//! (shares or weight, quota and period, realtime, cpuset), pids, hugetlb,
//! device rules and, on v2, the `unified` map. A field that cannot be
//! honoured fails with a sentence that names it.

use anyhow::{Context, bail};
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::Cgroup;

/// One write into a controller's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

fn write(controller: &'static str, file: &str, value: impl ToString) -> Write {
    Write {
        controller,
        file: file.to_string(),
        value: value.to_string(),
    }
}

impl Cgroup {
    /// Applies `resources` (at Create, or an Update of a running task).
    pub fn apply(&self, resources: &LinuxResources) -> anyhow::Result<()> {
        refuse_unsupported(resources, self.v2())?;
        let current = |controller: &str, file: &str| self.read(controller, file).ok();
        for w in plan(resources, self.v2(), &current)? {
            if let Err(e) = self.write(w.controller, &w.file, &w.value) {
                // v1 reclaims what it can of a lowered limit, then fails
                // with EBUSY: the container uses more than the new limit.
                let busy = e
                    .root_cause()
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                    == Some(libc::EBUSY);
                if busy && w.file.starts_with("memory.") {
                    return Err(BelowUsage(format!(
                        "linux.resources.memory ({} {}) is below the container's current memory usage, which the kernel could not reclaim",
                        w.file, w.value
                    ))
                    .into());
                }
                return Err(e.context(describe(&w)));
            }
        }
        if let Some(rules) = resources.devices() {
            self.apply_devices(rules)?;
        }
        Ok(())
    }
}

/// What a failed write was for, in the spec's words.
fn describe(w: &Write) -> String {
    let field = match w.file.as_str() {
        f if f.starts_with("memory.") => "linux.resources.memory",
        f if f.starts_with("cpuset.") => "linux.resources.cpu (cpuset)",
        f if f.starts_with("cpu.") => "linux.resources.cpu",
        f if f.starts_with("pids.") => "linux.resources.pids",
        f if f.starts_with("hugetlb.") => "linux.resources.hugepageLimits",
        _ => "linux.resources.unified",
    };
    format!("apply {field}")
}

/// Whether a `blockIO` sets anything: Docker sends `"blockIO": {}` with
/// every container, which asks for nothing.
fn asks_for_block_io(b: &oci_spec::runtime::LinuxBlockIo) -> bool {
    let some = |len: Option<usize>| len.is_some_and(|n| n > 0);
    b.weight().is_some()
        || b.leaf_weight().is_some()
        || some(b.weight_device().as_ref().map(Vec::len))
        || some(b.throttle_read_bps_device().as_ref().map(Vec::len))
        || some(b.throttle_write_bps_device().as_ref().map(Vec::len))
        || some(b.throttle_read_iops_device().as_ref().map(Vec::len))
        || some(b.throttle_write_iops_device().as_ref().map(Vec::len))
}

/// Refuses what has no cgroup file to go to, by name.
fn refuse_unsupported(resources: &LinuxResources, v2: bool) -> anyhow::Result<()> {
    if resources.block_io().as_ref().is_some_and(asks_for_block_io) {
        bail!("linux.resources.blockIO is not supported by the wasmtime shim");
    }
    if resources.network().is_some() {
        bail!("linux.resources.network (net_cls/net_prio) is not supported by the wasmtime shim");
    }
    if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        bail!("linux.resources.rdma is not supported by the wasmtime shim");
    }
    if !v2 && resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        bail!("linux.resources.unified needs cgroup v2; this host has cgroup v1");
    }
    Ok(())
}

/// The writes for `resources` in the order they must happen. `current`
/// reads a file of the cgroup as it is now, for the choices that depend
/// on it (the order of the memory and swap limits).
pub fn plan(
    resources: &LinuxResources,
    v2: bool,
    current: &dyn Fn(&str, &str) -> Option<String>,
) -> anyhow::Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(memory) = resources.memory() {
        match v2 {
            false => memory_v1(memory, current, &mut writes)?,
            true => memory_v2(memory, &mut writes)?,
        }
    }
    if let Some(cpu) = resources.cpu() {
        cpu_writes(cpu, v2, &mut writes)?;
    }
    if let Some(pids) = resources.pids() {
        let limit = pids.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        writes.push(write("pids", "pids.max", value));
    }
    for huge in resources.hugepage_limits().iter().flatten() {
        let size = huge.page_size();
        let digits = size
            .trim_end_matches("B")
            .trim_end_matches(['K', 'M', 'G', 'T', 'P']);
        if !size.ends_with('B') || digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit())
        {
            bail!("linux.resources.hugepageLimits: page size {size:?} is not like 2MB or 1GB");
        }
        let file = match v2 {
            false => format!("hugetlb.{}.limit_in_bytes", huge.page_size()),
            true => format!("hugetlb.{}.max", huge.page_size()),
        };
        writes.push(write("hugetlb", &file, huge.limit()));
    }
    if v2 {
        let mut unified: Vec<_> = resources.unified().iter().flatten().collect();
        unified.sort();
        for (file, value) in unified {
            if file.contains('/') || file.starts_with('.') {
                bail!("linux.resources.unified: {file:?} is not a cgroup file name");
            }
            writes.push(write("unified", file, value));
        }
    }
    Ok(writes)
}

fn memory_v1(
    memory: &LinuxMemory,
    current: &dyn Fn(&str, &str) -> Option<String>,
    writes: &mut Vec<Write>,
) -> anyhow::Result<()> {
    if memory.kernel().is_some() || memory.kernel_tcp().is_some() {
        // runc gave up kernel memory limits too: the kernel deprecated them.
        log::warn!("linux.resources.memory.kernel/kernelTCP are deprecated by the kernel; not set");
    }
    let limit = memory.limit().unwrap_or(0);
    let mut swap = memory.swap().unwrap_or(0);
    // An unlimited memory limit lifts the swap limit with it, as in runc,
    // where the host accounts swap at all.
    if limit == -1 && swap == 0 && current("memory", "memory.memsw.limit_in_bytes").is_some() {
        swap = -1;
    }
    let limit_w = write("memory", "memory.limit_in_bytes", limit);
    let swap_w = write("memory", "memory.memsw.limit_in_bytes", swap);
    match (limit != 0, swap != 0) {
        (true, true) => {
            // The kernel wants memsw >= memory at every moment: raise the
            // swap limit first when it grows past the current memory limit.
            let now: i64 = current("memory", "memory.limit_in_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MAX);
            if swap == -1 || now < swap {
                writes.extend([swap_w, limit_w]);
            } else {
                writes.extend([limit_w, swap_w]);
            }
        }
        (true, false) => writes.push(limit_w),
        (false, true) => writes.push(swap_w),
        (false, false) => {}
    }
    if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
        writes.push(write("memory", "memory.soft_limit_in_bytes", reservation));
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            bail!("linux.resources.memory.swappiness {swappiness} is above 100");
        }
        writes.push(write("memory", "memory.swappiness", swappiness));
    }
    if memory.disable_oom_killer() == Some(true) {
        writes.push(write("memory", "memory.oom_control", 1));
    }
    Ok(())
}

fn memory_v2(memory: &LinuxMemory, writes: &mut Vec<Write>) -> anyhow::Result<()> {
    if memory.kernel().is_some() || memory.kernel_tcp().is_some() {
        bail!("linux.resources.memory.kernel/kernelTCP have no cgroup v2 equivalent");
    }
    if memory.swappiness().is_some() {
        bail!("linux.resources.memory.swappiness has no cgroup v2 equivalent");
    }
    if memory.disable_oom_killer() == Some(true) {
        bail!("linux.resources.memory.disableOOMKiller has no cgroup v2 equivalent");
    }
    let limit = memory.limit().unwrap_or(0);
    let swap = memory.swap().unwrap_or(0);
    let max = |v: i64| {
        if v == -1 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    // OCI's swap counts memory plus swap; v2's memory.swap.max is swap alone.
    let swap_max = match (swap, limit) {
        // An unlimited memory limit lifts the swap limit with it, as runc.
        (0, -1) | (-1, _) => Some("max".to_string()),
        (0, _) => None,
        (_, -1) => {
            bail!("linux.resources.memory.swap {swap} is set with an unlimited memory limit")
        }
        (_, 0) => bail!("linux.resources.memory.swap is set without a memory limit"),
        (s, l) if s < l => bail!(
            "linux.resources.memory.swap {s} is below the memory limit {l} (it counts memory plus swap)"
        ),
        (s, l) => Some((s - l).to_string()),
    };
    // Swap first, so that a tighter memory limit can reclaim into it.
    if let Some(swap_max) = swap_max {
        writes.push(write("memory", "memory.swap.max", swap_max));
    }
    if limit != 0 {
        writes.push(write("memory", "memory.max", max(limit)));
    }
    if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
        writes.push(write("memory", "memory.low", max(reservation)));
    }
    Ok(())
}

/// cgroup v1 cpu.shares (2…262144) mapped onto v2 cpu.weight (1…10000),
/// the conversion runc and the kubelet use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

fn cpu_writes(cpu: &LinuxCpu, v2: bool, writes: &mut Vec<Write>) -> anyhow::Result<()> {
    if cpu.idle().is_some_and(|i| i != 0) {
        bail!("linux.resources.cpu.idle is not supported by the wasmtime shim");
    }
    if cpu.burst().is_some() {
        bail!("linux.resources.cpu.burst is not supported by the wasmtime shim");
    }
    let shares = cpu.shares().filter(|s| *s != 0);
    let quota = cpu.quota().filter(|q| *q != 0);
    let period = cpu.period().filter(|p| *p != 0);
    if v2 {
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            bail!("linux.resources.cpu.realtimeRuntime/realtimePeriod need cgroup v1");
        }
        if let Some(shares) = shares {
            writes.push(write("cpu", "cpu.weight", shares_to_weight(shares)));
        }
        if quota.is_some() || period.is_some() {
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = period.unwrap_or(100_000);
            writes.push(write("cpu", "cpu.max", format!("{quota} {period}")));
        }
    } else {
        if let Some(shares) = shares {
            writes.push(write("cpu", "cpu.shares", shares));
        }
        // The period first: a quota is checked against the period in force.
        if let Some(period) = period {
            writes.push(write("cpu", "cpu.cfs_period_us", period));
        }
        if let Some(quota) = quota {
            writes.push(write("cpu", "cpu.cfs_quota_us", quota));
        }
        if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
            writes.push(write("cpu", "cpu.rt_period_us", period));
        }
        if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
            writes.push(write("cpu", "cpu.rt_runtime_us", runtime));
        }
    }
    if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
        writes.push(write("cpuset", "cpuset.cpus", cpus));
    }
    if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
        writes.push(write("cpuset", "cpuset.mems", mems));
    }
    Ok(())
}

/// A memory limit the container already uses more than: the request's
/// fault, not the shim's.
#[derive(Debug)]
pub struct BelowUsage(pub String);

impl std::fmt::Display for BelowUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BelowUsage {}

/// Refuses, on cgroup v2, an Update whose memory limit is below the
/// container's anonymous memory, which no reclaim can free without swap:
/// v2 has no EBUSY, the kernel would OOM-kill the container on the spot.
/// Page cache is left to the kernel to reclaim, as runc leaves it. On v1
/// the kernel itself refuses (see `apply`).
pub fn check_update(cg: &Cgroup, resources: &LinuxResources) -> anyhow::Result<()> {
    if !cg.v2() {
        return Ok(());
    }
    let Some(limit) = resources
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
    else {
        return Ok(());
    };
    let stat = cg.read("memory", "memory.stat")?;
    let usage: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("anon "))
        .and_then(|v| v.trim().parse().ok())
        .context("memory.stat has no anon line")?;
    if limit < usage {
        return Err(BelowUsage(format!(
            "linux.resources.memory.limit {limit} is below the container's current memory usage of {usage} bytes"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn files(writes: &[Write]) -> Vec<(String, String)> {
        writes
            .iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const ALL: &str = r#"{"memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 64}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}"#;

    #[test]
    fn v1_files_in_runc_order() {
        let none = |_: &str, _: &str| None;
        let got = files(&plan(&resources(ALL), false, &none).unwrap());
        assert_eq!(
            got,
            pairs(&[
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "134217728"),
                ("memory.soft_limit_in_bytes", "33554432"),
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0"),
                ("pids.max", "64"),
                ("hugetlb.2MB.limit_in_bytes", "0"),
            ])
        );
    }

    #[test]
    fn v1_orders_memory_and_swap_by_the_current_limit() {
        let big = |_: &str, _: &str| Some("1073741824".to_string());
        let r = resources(r#"{"memory": {"limit": 1000, "swap": 2000}}"#);
        let got = files(&plan(&r, false, &big).unwrap());
        assert_eq!(got[0].0, "memory.limit_in_bytes");
        let small = |_: &str, _: &str| Some("500".to_string());
        let got = files(&plan(&r, false, &small).unwrap());
        assert_eq!(got[0].0, "memory.memsw.limit_in_bytes");
        let r = resources(r#"{"memory": {"limit": -1}}"#);
        let got = files(&plan(&r, false, &big).unwrap());
        assert_eq!(
            got,
            pairs(&[
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", "-1")
            ])
        );
    }

    #[test]
    fn v2_files_convert_shares_and_swap() {
        let none = |_: &str, _: &str| None;
        let mut r = resources(ALL);
        r.set_hugepage_limits(None);
        r.set_unified(Some([("memory.high".to_string(), "1G".to_string())].into()));
        let got = files(&plan(&r, true, &none).unwrap());
        assert_eq!(
            got,
            pairs(&[
                ("memory.swap.max", "67108864"),
                ("memory.max", "67108864"),
                ("memory.low", "33554432"),
                ("cpu.weight", "20"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0"),
                ("pids.max", "64"),
                ("memory.high", "1G"),
            ])
        );
        assert_eq!((shares_to_weight(2), shares_to_weight(1024)), (1, 39));
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        let none = |_: &str, _: &str| None;
        let bad = [
            (
                r#"{"memory": {"limit": 100, "swap": 50}}"#,
                "below the memory limit",
            ),
            (r#"{"memory": {"swappiness": 10}}"#, "swappiness"),
            (r#"{"cpu": {"realtimeRuntime": 5}}"#, "realtime"),
            (r#"{"unified": {"../x": "1"}}"#, "not a cgroup file name"),
            (
                r#"{"hugepageLimits": [{"pageSize": "../2MB", "limit": 1}]}"#,
                "page size",
            ),
            (
                r#"{"memory": {"limit": -1, "swap": 5}}"#,
                "unlimited memory limit",
            ),
        ];
        for (json, text) in bad {
            let err = plan(&resources(json), true, &none).unwrap_err().to_string();
            assert!(err.contains(text), "{json}: {err}");
        }
        let blkio = resources(r#"{"blockIO": {"weight": 10}}"#);
        let err = refuse_unsupported(&blkio, false).unwrap_err().to_string();
        assert!(err.contains("linux.resources.blockIO"), "{err}");
        // Docker's empty blockIO asks for nothing.
        let empty = resources(r#"{"blockIO": {"throttleReadBpsDevice": []}}"#);
        assert!(refuse_unsupported(&empty, false).is_ok());
        let unified = resources(r#"{"unified": {"memory.high": "1"}}"#);
        assert!(refuse_unsupported(&unified, false).is_err());
        assert!(refuse_unsupported(&unified, true).is_ok());
    }

    #[test]
    fn applies_to_a_v2_tree_and_checks_usage() {
        let root = tempfile::tempdir().unwrap();
        let cg = Cgroup::at(vec![(root.path().to_path_buf(), vec![])], true);
        let cg = Cgroup { v1: false, ..cg };
        std::fs::write(root.path().join("memory.stat"), "anon 5000\nfile 9000\n").unwrap();
        cg.apply(&resources(
            r#"{"memory": {"limit": 8000}, "pids": {"limit": 0}}"#,
        ))
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(root.path().join(f)).unwrap();
        assert_eq!(
            (read("memory.max"), read("pids.max")),
            ("8000".into(), "max".into())
        );
        let low = resources(r#"{"memory": {"limit": 4000}}"#);
        let err = check_update(&cg, &low).unwrap_err().to_string();
        assert!(
            err.contains("below the container's current memory usage of 5000"),
            "{err}"
        );
        assert!(check_update(&cg, &resources(r#"{"memory": {"limit": 6000}}"#)).is_ok());
        std::fs::write(
            root.path().join("memory.stat"),
            "anon 1000\ninactive_file 3000\n",
        )
        .unwrap();
        assert!(check_update(&cg, &low).is_ok(), "page cache is reclaimable");
    }
}
