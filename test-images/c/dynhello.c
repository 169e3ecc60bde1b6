/*
 * The `dynamic` image's program: dynamically linked on purpose (build.rs compiles it without
 * -static), so it only starts when the image also carries its ELF interpreter and every shared
 * library it needs at the same absolute paths as on the build host. Tests use it to check that
 * a runtime executes from the container's rootfs rather than from the host's.
 */
#include <stdio.h>

int main(void)
{
	puts("hello from a dynamic binary");
	return 0;
}
