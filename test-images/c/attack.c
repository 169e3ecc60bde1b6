/*
 * The `attack` program of the busybox image: what a hostile root process with the default
 * capabilities tries against every other process it can see (a shared PID namespace), beyond
 * what busybox's sh can do. For each pid but its own it tries
 *   - ptrace(PTRACE_SEIZE), then detaches at once,
 *   - pidfd_open and pidfd_getfd of descriptors 0..255, to steal a socket or file,
 * and prints one line per process, `SEEN <pid> <cmdline>`, and one per success,
 * `PTRACED <pid>` or `GOTFD <pid> <fd> <what the stolen descriptor is>`.
 * It exits 0 once it has looked at every process.
 *
 * Built static by build.rs (cc -static -O2), so the image needs no libraries.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static void cmdline(int pid, char *out, size_t size)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	out[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, out, size - 1);
	close(fd);
	if (n <= 0)
		return;
	for (ssize_t i = 0; i < n; i++)
		if (out[i] == '\0')
			out[i] = ' ';
	out[n] = '\0';
}

static void try_ptrace(int pid)
{
	if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) == 0) {
		printf("PTRACED %d\n", pid);
		ptrace(PTRACE_DETACH, pid, NULL, NULL);
	}
}

static void try_getfd(int pid)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return;
	for (int target = 0; target < 256; target++) {
		int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
		if (fd < 0)
			continue;
		char link[64], what[256];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, what, sizeof what - 1);
		what[n > 0 ? n : 0] = '\0';
		printf("GOTFD %d %d %s\n", pid, target, what);
		close(fd);
	}
	close(pidfd);
}

int main(void)
{
	DIR *proc = opendir("/proc");
	if (!proc) {
		perror("attack: /proc");
		return 1;
	}
	int self = getpid();
	struct dirent *entry;
	while ((entry = readdir(proc))) {
		int pid = atoi(entry->d_name);
		if (pid <= 0 || pid == self)
			continue;
		char line[512];
		cmdline(pid, line, sizeof line);
		printf("SEEN %d %s\n", pid, line);
		try_ptrace(pid);
		try_getfd(pid);
	}
	closedir(proc);
	return 0;
}
