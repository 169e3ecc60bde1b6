/*
 * A conformance probe for the native `probe` image. Run without arguments, it prints what a
 * process can see of its sandbox, one `key: value` line per fact, in a fixed order with every
 * list sorted, so that the reports of two runtimes (runc and the shim, say) can be diffed line
 * by line. Values that differ on every run by nature (namespace inodes, pids) are printed as
 * they are; tests compare them with care.
 *
 * Argument modes for other tests:
 *   probe alloc <MiB>     allocate and touch <MiB> MiB, 1 MiB at a time, printing
 *                         "allocated <n> MiB" every 16 MiB, then exit 0
 *   probe open <path>...  open each path read-only and read a byte: "<path>: ok" or
 *                         "<path>: <ERRNO_NAME>"; exit 0
 *   probe sleep           print "ready" and pause forever, with no signal handlers
 *
 * Built static by build.rs (cc -static -O2), so the image needs no libraries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe.h"

/* Touches every page so the memory is really charged to the cgroup; a memory limit then gets
 * the process OOM-killed instead of letting it finish. */
static int alloc(const char *arg)
{
	char *end;
	unsigned long mib = strtoul(arg, &end, 10);
	if (*arg == '\0' || *end != '\0') {
		fprintf(stderr, "probe: alloc wants a number of MiB, not %s\n", arg);
		return 2;
	}
	for (unsigned long i = 1; i <= mib; i++) {
		char *chunk = malloc(1 << 20);
		if (!chunk) {
			printf("malloc failed at %lu MiB\n", i - 1);
			return 1;
		}
		memset(chunk, 0xa5, 1 << 20);
		if (i % 16 == 0)
			printf("allocated %lu MiB\n", i);
	}
	return 0;
}

static int open_paths(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC | O_NOCTTY);
		int err = fd < 0 ? errno : 0;
		if (fd >= 0) {
			char byte;
			if (read(fd, &byte, 1) < 0)
				err = errno;
			close(fd);
		}
		printf("%s: %s\n", argv[i], err ? errname(err) : "ok");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 1)
		return report();
	/* Line buffering, so a test reading a pipe sees progress before an OOM kill. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "alloc"))
		return alloc(argv[2]);
	if (argc >= 2 && !strcmp(argv[1], "open"))
		return open_paths(argc - 2, argv + 2);
	if (argc == 2 && !strcmp(argv[1], "sleep")) {
		printf("ready\n");
		for (;;)
			pause();
	}
	fprintf(stderr, "usage: probe | probe alloc <MiB> | probe open <path>... | probe sleep\n");
	return 2;
}
