/*
 * hello-c: a small WASI preview 1 program in C, compiled by test-images with
 * `python -m ziglang cc -target wasm32-wasi -O2` (clang and wasi-libc), so that
 * the shim runs a module from a real toolchain rather than only hand-written WAT.
 *
 *   hello-c              prints "hello from c", exits 0
 *   hello-c exit <n>     exits with status n (wasi-libc's exit, i.e. proc_exit(n))
 *   hello-c cat          copies stdin to stdout until end of file
 *   hello-c wc           prints "<lines> <words> <bytes>" of stdin
 *   hello-c sleep <s>    sleeps s seconds (nanosleep, i.e. poll_oneoff on a clock)
 *   hello-c args         prints each argument, argv[0] included, one per line
 *   hello-c env <NAME>   prints the value of NAME, or exits 1 if it is not set
 *
 * A bad command or argument prints a usage line on stderr and exits 2.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int usage(void) {
    fputs("usage: hello-c [exit <n> | cat | wc | sleep <s> | args | env <NAME>]\n", stderr);
    return 2;
}

/* Parses a whole non-negative decimal number; -1 if it is not one. */
static long number(const char *text) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || value < 0) {
        return -1;
    }
    return value;
}

/* Writes all of buf, retrying short writes; 0 on success. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cat(void) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) {
            return 0;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("hello-c: read");
            return 1;
        }
        if (write_all(1, buf, (size_t)n) != 0) {
            perror("hello-c: write");
            return 1;
        }
    }
}

static int wc(void) {
    char buf[65536];
    unsigned long long lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("hello-c: read");
            return 1;
        }
        bytes += (unsigned long long)n;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[i];
            lines += c == '\n';
            if (isspace(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    printf("%llu %llu %llu\n", lines, words, bytes);
    return 0;
}

static int sleep_for(const char *arg) {
    long seconds = number(arg);
    if (seconds < 0) {
        return usage();
    }
    struct timespec left = {.tv_sec = seconds, .tv_nsec = 0};
    while (nanosleep(&left, &left) != 0) {
        if (errno != EINTR) {
            perror("hello-c: nanosleep");
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        puts("hello from c");
        return 0;
    }
    const char *command = argv[1];
    if (strcmp(command, "exit") == 0 && argc == 3) {
        long status = number(argv[2]);
        if (status < 0 || status > 255) {
            return usage();
        }
        exit((int)status);
    }
    if (strcmp(command, "cat") == 0 && argc == 2) {
        return cat();
    }
    if (strcmp(command, "wc") == 0 && argc == 2) {
        return wc();
    }
    if (strcmp(command, "sleep") == 0 && argc == 3) {
        return sleep_for(argv[2]);
    }
    if (strcmp(command, "args") == 0) {
        for (int i = 0; i < argc; i++) {
            puts(argv[i]);
        }
        return 0;
    }
    if (strcmp(command, "env") == 0 && argc == 3) {
        const char *value = getenv(argv[2]);
        if (value == NULL) {
            return 1;
        }
        puts(value);
        return 0;
    }
    return usage();
}
