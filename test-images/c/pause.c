/*
 * The `pause` image's program: an idle PID 1 in the manner of the Kubernetes pause container,
 * so tests can hold a sandbox open and check how it is stopped.
 *
 * SIGINT and SIGTERM end it with status 0, so a polite stop succeeds at once instead of
 * waiting for SIGKILL. As PID 1 it inherits orphans, so it reaps every exited child on SIGCHLD.
 * `pause -v` prints PAUSE_VERSION and exits 0; other arguments are ignored.
 *
 * Built static by build.rs (cc -static -O2), so the image needs no libraries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "pause (wasmtime-shim-test) 1.0"

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	/* waitpid may change errno, which the interrupted code could be about to read. */
	int saved = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static void handle(int sig, void (*handler)(int), int flags)
{
	struct sigaction action;
	memset(&action, 0, sizeof action);
	action.sa_handler = handler;
	action.sa_flags = flags;
	sigemptyset(&action.sa_mask);
	if (sigaction(sig, &action, NULL) != 0) {
		perror("pause: sigaction");
		_exit(1);
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			printf("%s\n", PAUSE_VERSION);
			return 0;
		}
	}
	handle(SIGINT, stop, 0);
	handle(SIGTERM, stop, 0);
	/* SA_NOCLDSTOP: a stopped child is not an exited one and needs no reaping. */
	handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART);
	for (;;)
		pause();
}
