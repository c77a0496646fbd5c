/*
 * An LD_PRELOAD shim for TestCheckpointFsyncFailureKeepsTheWAL: once the
 * file named by FAILSYNC_TRIGGER exists, the next fsync or fdatasync of a
 * file whose path ends with FAILSYNC_SUFFIX fails with EIO and removes the
 * trigger, as a failing disk's writeback error is reported once. SQLite
 * calls libc's fsync; Go's own (the WAL syncer's) are system calls, which
 * this does not touch.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failing(int fd) {
	const char *suffix = getenv("FAILSYNC_SUFFIX");
	const char *trigger = getenv("FAILSYNC_TRIGGER");
	if (!suffix || !trigger || access(trigger, F_OK) != 0) return 0;
	char link[64], path[4096];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof path - 1);
	if (n < 0) return 0;
	path[n] = 0;
	size_t ls = strlen(suffix);
	if ((size_t)n < ls || strcmp(path + n - ls, suffix) != 0) return 0;
	unlink(trigger); /* once, as Linux reports a writeback error once */
	return 1;
}

int fsync(int fd) {
	static int (*real)(int);
	if (!real) real = dlsym(RTLD_NEXT, "fsync");
	if (failing(fd)) { errno = EIO; return -1; }
	return real(fd);
}

int fdatasync(int fd) {
	static int (*real)(int);
	if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
	if (failing(fd)) { errno = EIO; return -1; }
	return real(fd);
}
