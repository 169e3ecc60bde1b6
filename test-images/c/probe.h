/*
 * Shared by the parts of the conformance probe (probe.c, probe_util.c, probe_report.c,
 * probe_fs.c), which build.rs compiles and links into one static program.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stddef.h>

/* Prints "probe: <what>: <error>" to stderr and exits with status 1. */
void die(const char *what);
/* The symbolic name of an errno value, like EACCES, or E<n> for one glibc cannot name. */
const char *errname(int err);

/* A growable list of output lines, sorted before printing. */
struct lines {
	char **v;
	size_t n, cap;
};
void add(struct lines *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the lines sorted with strcmp, then empties the list. */
void print_sorted(struct lines *l);
int cmp_str(const void *a, const void *b);
int cmp_int(const void *a, const void *b);

/* Reads a whole (proc) file into a NUL-terminated buffer; NULL with errno set on failure. */
char *slurp(const char *path);
void trim_newline(char *s);

/* The report sections of probe_fs.c. */
void print_mounts(void);
void print_paths(void);
void print_dev(void);

/* Prints the whole report; returns the exit status. */
int report(void);

#endif
