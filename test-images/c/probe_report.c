/* The conformance probe's report: every section in a fixed order. The filesystem sections are
 * in probe_fs.c. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "probe.h"

/* Capabilities, no_new_privs and seccomp, in the order /proc/self/status documents them. */
static void print_status(void)
{
	static const char *keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
				     "NoNewPrivs", "Seccomp", "Seccomp_filters"};
	char *status = slurp("/proc/self/status");
	int err = errno;
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
		if (!status) {
			printf("%s: %s\n", keys[i], errname(err));
			continue;
		}
		size_t klen = strlen(keys[i]);
		const char *value = NULL;
		for (const char *line = status; line && !value;) {
			if (strncmp(line, keys[i], klen) == 0 && line[klen] == ':')
				value = line + klen + 1;
			const char *nl = strchr(line, '\n');
			line = nl ? nl + 1 : NULL;
		}
		if (!value) {
			printf("%s: missing\n", keys[i]);
			continue;
		}
		value += strspn(value, " \t");
		printf("%s: %.*s\n", keys[i], (int)strcspn(value, "\n"), value);
	}
	free(status);
}

static int cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;
	return (x > y) - (x < y);
}

static void print_ids(void)
{
	printf("uid: %u\neuid: %u\ngid: %u\negid: %u\n", getuid(), geteuid(), getgid(), getegid());
	int n = getgroups(0, NULL);
	if (n < 0)
		die("getgroups");
	gid_t *groups = calloc((size_t)n + 1, sizeof *groups);
	if (!groups || (n = getgroups(n, groups)) < 0)
		die("getgroups");
	qsort(groups, (size_t)n, sizeof *groups, cmp_gid);
	printf("groups:");
	for (int i = 0; i < n; i++)
		printf(" %u", groups[i]);
	printf("\n");
	free(groups);
}

static void print_namespaces(void)
{
	/* Sorted by name. */
	static const char *names[] = {"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		char path[64], target[256];
		snprintf(path, sizeof path, "/proc/self/ns/%s", names[i]);
		ssize_t n = readlink(path, target, sizeof target - 1);
		if (n < 0) {
			printf("ns.%s: %s\n", names[i], errname(errno));
			continue;
		}
		target[n] = '\0';
		printf("ns.%s: %s\n", names[i], target);
	}
}

static void print_limit(rlim_t value)
{
	if (value == RLIM_INFINITY)
		printf(" unlimited");
	else
		printf(" %llu", (unsigned long long)value);
}

static void print_rlimits(void)
{
	/* Sorted by name. */
	static const struct {
		const char *name;
		int resource;
	} limits[] = {
		{"AS", RLIMIT_AS},	       {"CORE", RLIMIT_CORE},	  {"CPU", RLIMIT_CPU},
		{"DATA", RLIMIT_DATA},	       {"FSIZE", RLIMIT_FSIZE},	  {"LOCKS", RLIMIT_LOCKS},
		{"MEMLOCK", RLIMIT_MEMLOCK},   {"MSGQUEUE", RLIMIT_MSGQUEUE}, {"NICE", RLIMIT_NICE},
		{"NOFILE", RLIMIT_NOFILE},     {"NPROC", RLIMIT_NPROC},	  {"RSS", RLIMIT_RSS},
		{"RTPRIO", RLIMIT_RTPRIO},     {"RTTIME", RLIMIT_RTTIME}, {"SIGPENDING", RLIMIT_SIGPENDING},
		{"STACK", RLIMIT_STACK},
	};
	for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
		struct rlimit rl;
		printf("rlimit.%s:", limits[i].name);
		if (getrlimit(limits[i].resource, &rl) != 0) {
			printf(" %s\n", errname(errno));
			continue;
		}
		print_limit(rl.rlim_cur);
		print_limit(rl.rlim_max);
		printf("\n");
	}
}

static void print_cgroups(void)
{
	char *cgroups = slurp("/proc/self/cgroup");
	if (!cgroups) {
		printf("cgroup: %s\n", errname(errno));
		return;
	}
	struct lines lines = {0};
	char *save = NULL;
	for (char *line = strtok_r(cgroups, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		add(&lines, "cgroup: %s", line);
	free(cgroups);
	print_sorted(&lines);
}

static void print_misc(void)
{
	char name[256];
	if (gethostname(name, sizeof name) == 0)
		printf("hostname: %.*s\n", (int)sizeof name, name);
	else
		printf("hostname: %s\n", errname(errno));
	if (getdomainname(name, sizeof name) == 0)
		printf("domainname: %.*s\n", (int)sizeof name, name);
	else
		printf("domainname: %s\n", errname(errno));
	mode_t mask = umask(0);
	umask(mask);
	printf("umask: %04o\n", (unsigned)mask);
	char *adj = slurp("/proc/self/oom_score_adj");
	if (adj) {
		trim_newline(adj);
		printf("oom_score_adj: %s\n", adj);
		free(adj);
	} else {
		printf("oom_score_adj: %s\n", errname(errno));
	}
}

/* The descriptors the process was started with; every other report closes what it opens. */
static void print_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	if (!dir) {
		printf("fds: %s\n", errname(errno));
		return;
	}
	int fds[1024];
	size_t n = 0;
	struct dirent *d;
	while ((d = readdir(dir)) && n < 1024) {
		if (d->d_name[0] == '.')
			continue;
		int fd = atoi(d->d_name);
		if (fd != dirfd(dir))
			fds[n++] = fd;
	}
	closedir(dir);
	qsort(fds, n, sizeof *fds, cmp_int);
	printf("fds:");
	for (size_t i = 0; i < n; i++)
		printf(" %d", fds[i]);
	printf("\n");
}

static void print_process(void)
{
	printf("pid: %d\nppid: %d\n", getpid(), getppid());
	char *cwd = getcwd(NULL, 0);
	printf("cwd: %s\n", cwd ? cwd : errname(errno));
	free(cwd);
	const char *path = getenv("PATH");
	printf("env.PATH: %s\n", path ? path : "(unset)");
}

int report(void)
{
	/* The fds come first, before anything else could have left a descriptor open. */
	print_fds();
	print_status();
	print_ids();
	print_namespaces();
	print_mounts();
	print_paths();
	print_rlimits();
	print_cgroups();
	print_misc();
	print_dev();
	print_process();
	if (fflush(stdout) != 0 || ferror(stdout))
		return 1;
	return 0;
}
