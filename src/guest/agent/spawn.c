/*
 * Starting a session's process for banger-vsock-agent: argv with a clean environment, an
 * optional working directory and user, and either three pipes or a pty. The child runs in
 * its own session (setsid), so signals go to its whole process group. Failures before exec
 * (no such user, bad workdir, command not found) are reported back through a close-on-exec
 * pipe, so the host gets an error reply instead of a mysterious exit code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>
#include "agent.h"

struct who {
	uid_t uid;
	gid_t gid;
	char name[64], home[256], shell[128];
};

/*
 * Resolves NAME, UID or UID:GID from /etc/passwd (no NSS in a static binary). A numeric uid
 * absent from /etc/passwd is accepted with gid = uid and HOME=/.
 */
static int lookup_user(const char *spec, struct who *w, char *err, size_t errcap) {
	char name[64];
	const char *colon = strchr(spec, ':');
	size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
	if (nl == 0 || nl >= sizeof name) { snprintf(err, errcap, "invalid user '%s'", spec); return -1; }
	memcpy(name, spec, nl);
	name[nl] = 0;
	char *end;
	long num = strtol(name, &end, 10);
	int numeric = *end == 0 && num >= 0;
	int found = 0;
	FILE *f = fopen("/etc/passwd", "r");
	char line[1024];
	while (f && !found && fgets(line, sizeof line, f)) {
		char *fld[7] = {0};
		char *s = line;
		for (int i = 0; i < 7 && s; i++) { fld[i] = s; s = strchr(s, ':'); if (s) *s++ = 0; }
		if (!fld[6]) continue;
		fld[6][strcspn(fld[6], "\n")] = 0;
		if (numeric ? atol(fld[2]) != num : strcmp(fld[0], name) != 0) continue;
		w->uid = (uid_t)atol(fld[2]);
		w->gid = (gid_t)atol(fld[3]);
		snprintf(w->name, sizeof w->name, "%s", fld[0]);
		snprintf(w->home, sizeof w->home, "%s", fld[5]);
		snprintf(w->shell, sizeof w->shell, "%s", fld[6]);
		found = 1;
	}
	if (f) fclose(f);
	if (!found) {
		if (!numeric) { snprintf(err, errcap, "unknown user '%s' (not in the guest's /etc/passwd)", name); return -1; }
		w->uid = (uid_t)num;
		w->gid = (gid_t)num;
		snprintf(w->name, sizeof w->name, "%ld", num);
		snprintf(w->home, sizeof w->home, "/");
	}
	if (colon) {
		long g = strtol(colon + 1, &end, 10);
		if (*end || g < 0 || end == colon + 1) { snprintf(err, errcap, "invalid group in user '%s'", spec); return -1; }
		w->gid = (gid_t)g;
	}
	return 0;
}

static void child_fail(int fd, const char *what, int code) {
	char msg[512];
	int n = snprintf(msg, sizeof msg, "%c%s: %s", code, what, strerror(errno));
	if (write(fd, msg, (size_t)n) < 0) { /* nothing else to do */ }
	_exit(code);
}

int spawn_request(const struct request *r, char *const *argv, struct spawned *s, char *err, size_t errcap, int *exit_code) {
	struct who w = {.uid = 0, .gid = 0, .name = "root", .home = "/root"};
	*exit_code = 126;
	if (r->user && lookup_user(r->user, &w, err, errcap)) return -1;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2];
	int master = -1;
	char *slave = NULL;
	if (pipe2(rep, O_CLOEXEC)) { snprintf(err, errcap, "pipe: %s", strerror(errno)); return -1; }
	if (r->tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) || unlockpt(master) || !(slave = ptsname(master))) {
			snprintf(err, errcap, "cannot allocate a pty: %s", strerror(errno));
			goto fail;
		}
		struct winsize ws = {.ws_row = (unsigned short)(r->rows ? r->rows : 24), .ws_col = (unsigned short)(r->cols ? r->cols : 80)};
		ioctl(master, TIOCSWINSZ, &ws);
	} else if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
		snprintf(err, errcap, "pipe: %s", strerror(errno));
		goto fail;
	}
	pid_t pid = fork();
	if (pid < 0) { snprintf(err, errcap, "fork: %s", strerror(errno)); goto fail; }
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < 32; sig++) signal(sig, SIG_DFL);
		setsid();
		if (r->tty) {
			int fd = open(slave, O_RDWR);
			if (fd < 0) child_fail(rep[1], "open pty", 126);
			ioctl(fd, TIOCSCTTY, 0);
			dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
			if (fd > 2) close(fd);
		} else {
			dup2(in[0], 0); dup2(out[1], 1); dup2(errp[1], 2);
		}
		if (setgroups(1, &w.gid) || setgid(w.gid) || setuid(w.uid)) child_fail(rep[1], "switch user", 126);
		const char *wd = r->workdir ? r->workdir : (w.uid == 0 ? "/" : w.home);
		if (chdir(wd)) {
			if (r->workdir) child_fail(rep[1], r->workdir, 126);
			if (chdir("/")) { /* stay where we are */ }
		}
		clearenv();
		setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
		setenv("HOME", w.home, 1);
		setenv("USER", w.name, 1);
		setenv("LOGNAME", w.name, 1);
		if (r->tty) setenv("TERM", "xterm", 1);
		for (char **e = r->env; e && *e; e++) putenv(*e);
		execvp(argv[0], argv);
		child_fail(rep[1], argv[0], errno == ENOENT ? 127 : 126);
	}
	close(rep[1]);
	rep[1] = -1;
	char msg[512];
	ssize_t n;
	do n = read(rep[0], msg, sizeof msg - 1); while (n < 0 && errno == EINTR);
	close(rep[0]);
	rep[0] = -1;
	if (n > 0) { /* the child failed before exec: it has exited with the code it sent */
		msg[n] = 0;
		*exit_code = (unsigned char)msg[0];
		snprintf(err, errcap, "%s", msg + 1);
		goto fail;
	}
	s->pid = pid;
	if (r->tty) {
		s->out_fd = master;
		s->in_fd = dup(master);
		s->err_fd = -1;
	} else {
		close(in[0]); close(out[1]); close(errp[1]);
		s->in_fd = in[1];
		s->out_fd = out[0];
		s->err_fd = errp[0];
	}
	set_nonblock(s->in_fd);
	set_nonblock(s->out_fd);
	if (s->err_fd >= 0) set_nonblock(s->err_fd);
	return 0;
fail:
	for (int *fd = (int[]){in[0], in[1], out[0], out[1], errp[0], errp[1], master, rep[0], rep[1]}, i = 0; i < 9; i++)
		if (fd[i] >= 0) close(fd[i]);
	return -1;
}
