/* The filesystem sections of the conformance probe's report: mounts, masked and read-only
 * paths, and the /dev listing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "probe.h"

/* Splits a comma-separated option list, sorts it and joins it again into `out`. Overlayfs
 * names its layer directories (host snapshot paths that differ on every run) in lowerdir=,
 * upperdir= and workdir=; their values become `*` so that reports stay comparable. */
static void sort_options(const char *options, char *out, size_t out_len)
{
	char *copy = strdup(options);
	char *parts[256];
	size_t n = 0;
	if (!copy)
		die("strdup");
	for (char *save = NULL, *p = strtok_r(copy, ",", &save); p && n < 256; p = strtok_r(NULL, ",", &save)) {
		if (!strncmp(p, "lowerdir=", 9) || !strncmp(p, "upperdir=", 9) || !strncmp(p, "workdir=", 8))
			strcpy(strchr(p, '=') + 1, "*");
		parts[n++] = p;
	}
	qsort(parts, n, sizeof *parts, cmp_str);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (i)
			strncat(out, ",", out_len - strlen(out) - 1);
		strncat(out, parts[i], out_len - strlen(out) - 1);
	}
	free(copy);
}

/* One line per mount: mount point, type, per-mount options and superblock options, each option
 * list sorted. Mount and parent ids, device numbers, the root within the filesystem, the
 * propagation fields and the source are left out because they differ between runs or hosts. */
void print_mounts(void)
{
	char *info = slurp("/proc/self/mountinfo");
	if (!info) {
		printf("mount: %s\n", errname(errno));
		return;
	}
	struct lines lines = {0};
	char *save = NULL;
	for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *fields[64];
		size_t n = 0;
		char *fsave = NULL;
		for (char *f = strtok_r(line, " ", &fsave); f && n < 64; f = strtok_r(NULL, " ", &fsave))
			fields[n++] = f;
		/* Optional fields (shared:N, master:N) run from the seventh field to a lone "-". */
		size_t dash = 6;
		while (dash < n && strcmp(fields[dash], "-") != 0)
			dash++;
		if (dash + 2 >= n) {
			add(&lines, "mount: unparsed");
			continue;
		}
		/* An empty source leaves two spaces, which strtok_r reads as one: the superblock
		 * options are then one field earlier. */
		const char *super_options = fields[dash + 3 < n ? dash + 3 : dash + 2];
		static char options[4096], super[4096];
		sort_options(fields[5], options, sizeof options);
		sort_options(super_options, super, sizeof super);
		add(&lines, "mount: %s %s %s %s", fields[4], fields[dash + 1], options, super);
	}
	free(info);
	print_sorted(&lines);
}

/* The paths that containerd's default spec masks or makes read-only. Only open(2) is tried, for
 * reading and for writing; nothing is ever written. */
void print_paths(void)
{
	static const char *paths[] = {
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
		"/proc/scsi", "/sys/devices/virtual/powercap", "/proc/bus", "/proc/fs", "/proc/irq",
		"/proc/sys", "/proc/sysrq-trigger",
	};
	struct lines lines = {0};
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
		const char *p = paths[i];
		struct stat st;
		int stat_err = stat(p, &st) == 0 ? 0 : errno;
		int is_dir = !stat_err && S_ISDIR(st.st_mode);
		int rfd = open(p, (is_dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC | O_NOCTTY);
		int read_err = rfd < 0 ? errno : 0;
		int wfd = open(p, O_WRONLY | O_CLOEXEC | O_NOCTTY);
		int write_err = wfd < 0 ? errno : 0;
		if (wfd >= 0)
			close(wfd);
		const char *content;
		if (stat_err)
			content = errname(stat_err);
		else if (is_dir)
			content = "dir";
		else if (rfd < 0)
			content = errname(read_err);
		else {
			char byte;
			ssize_t n = read(rfd, &byte, 1);
			content = n > 0 ? "nonempty" : n == 0 ? "empty" : errname(errno);
		}
		if (rfd >= 0)
			close(rfd);
		add(&lines, "path.%s: read=%s write=%s content=%s", p,
		    read_err ? errname(read_err) : "ok", write_err ? errname(write_err) : "ok", content);
	}
	print_sorted(&lines);
}

static char type_char(mode_t mode)
{
	return S_ISCHR(mode) ? 'c' : S_ISBLK(mode) ? 'b' : S_ISDIR(mode) ? 'd' : S_ISLNK(mode) ? 'l'
	       : S_ISREG(mode) ? 'f' : S_ISFIFO(mode) ? 'p' : S_ISSOCK(mode) ? 's' : '?';
}

/* Adds a line for `path` and, for a directory, for everything below it (symlinks are not
 * followed). */
static void list_dev(struct lines *lines, const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		add(lines, "dev: %s error=%s", path, errname(errno));
		return;
	}
	unsigned perms = st.st_mode & 07777;
	char t = type_char(st.st_mode);
	if (t == 'c' || t == 'b') {
		add(lines, "dev: %s %c %04o %u:%u", path, t, perms, major(st.st_rdev), minor(st.st_rdev));
	} else if (t == 'l') {
		char target[4096];
		ssize_t n = readlink(path, target, sizeof target - 1);
		target[n < 0 ? 0 : n] = '\0';
		add(lines, "dev: %s l %04o %s", path, perms, n < 0 ? errname(errno) : target);
	} else {
		add(lines, "dev: %s %c %04o", path, t, perms);
	}
	if (t != 'd')
		return;
	DIR *dir = opendir(path);
	if (!dir) {
		add(lines, "dev: %s/ error=%s", path, errname(errno));
		return;
	}
	struct dirent *d;
	while ((d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		char *child;
		if (asprintf(&child, "%s/%s", path, d->d_name) < 0)
			die("asprintf");
		list_dev(lines, child);
		free(child);
	}
	closedir(dir);
}

void print_dev(void)
{
	struct lines lines = {0};
	list_dev(&lines, "/dev");
	print_sorted(&lines);
}
