/* Helpers of the conformance probe: errno names, sorted line lists and reading proc files. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe.h"

void die(const char *what)
{
	fprintf(stderr, "probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The symbolic name of an errno value (EACCES, ...), which unlike strerror's text does not
 * depend on the libc's wording. Several buffers, because one line may show two errors. */
const char *errname(int err)
{
	static char unknown[4][24];
	static int next;
	const char *name = strerrorname_np(err);
	if (name)
		return name;
	char *buf = unknown[next++ % 4];
	snprintf(buf, sizeof unknown[0], "E%d", err);
	return buf;
}

void add(struct lines *l, const char *fmt, ...)
{
	va_list ap;
	char *line;
	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		die("vasprintf");
	va_end(ap);
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof *l->v);
		if (!l->v)
			die("realloc");
	}
	l->v[l->n++] = line;
}

int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void print_sorted(struct lines *l)
{
	qsort(l->v, l->n, sizeof *l->v, cmp_str);
	for (size_t i = 0; i < l->n; i++) {
		printf("%s\n", l->v[i]);
		free(l->v[i]);
	}
	free(l->v);
	*l = (struct lines){0};
}

char *slurp(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			die("malloc");
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			int err = errno;
			free(buf);
			close(fd);
			errno = err;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (cap - len < 2)
			buf = realloc(buf, cap *= 2);
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

void trim_newline(char *s)
{
	s[strcspn(s, "\n")] = '\0';
}

int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}
