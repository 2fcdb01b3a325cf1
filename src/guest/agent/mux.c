/*
 * Protocol v2 of banger-vsock-agent: length-prefixed binary frames multiplexing many streams
 * (requests and exec/tar sessions) over one byte stream. See src/guest/README.md.
 *
 * Flow control: each side may send at most WINDOW bytes of data on a stream before the other
 * side returns credit (F_CREDIT). The agent reads a child's output only while it has credit
 * and the connection's queue is short, so memory stays bounded however fast a child writes
 * and however slowly the host reads. A host that sends stdin beyond its credit, an unknown
 * frame type, a frame over MAX_PAYLOAD or anything before F_HELLO is a protocol error: the
 * agent answers F_ERROR and resets the connection (all its sessions are killed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include "agent.h"

#define QUEUE_HIGH (512 * 1024) /* stop reading children while this much waits for the host */
#define CREDIT_BATCH 32768

struct session {
	struct conn *c; /* NULL when unused */
	uint32_t id;
	pid_t pid;
	int in_fd, out_fd, err_fd, tty, eof, exited, status;
	long out_credit;  /* bytes we may still send the host */
	long in_allow;    /* stdin bytes the host may still send us */
	long in_consumed; /* written to the child, not yet credited back */
	char *inbuf;
	size_t inlen;
};
static struct session ses[MAX_SESSIONS];

static void put32(unsigned char *b, uint32_t v) { b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v; }
static uint32_t get32(const unsigned char *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }

static void send_frame(struct conn *c, int type, uint32_t id, const void *p, size_t n) {
	unsigned char h[FRAME_HDR];
	put32(h, (uint32_t)(n + 5));
	h[4] = (unsigned char)type;
	put32(h + 5, id);
	conn_queue(c, h, sizeof h);
	if (n) conn_queue(c, p, n);
}

static void send_json(struct conn *c, int type, uint32_t id, struct out *o) {
	send_frame(c, type, id, o->p, o->len);
	free(o->p);
	o->p = NULL;
}

static void reply_error(struct conn *c, uint32_t id, const char *msg, int code) {
	struct out o = {0};
	out_str(&o, "{\"ok\":false,\"error\":");
	out_json_string(&o, msg);
	if (code) out_fmt(&o, ",\"code\":%d", code);
	out_str(&o, "}");
	send_json(c, F_REPLY, id, &o);
}

static struct session *find(struct conn *c, uint32_t id) {
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (ses[i].c == c && ses[i].id == id) return &ses[i];
	return NULL;
}

static void close_fd(int *fd) {
	if (*fd >= 0) close(*fd);
	*fd = -1;
}

static void session_free(struct session *s, int kill_it) {
	if (kill_it && !s->exited && s->pid > 0 && kill(-s->pid, SIGKILL) != 0) kill(s->pid, SIGKILL);
	close_fd(&s->in_fd);
	close_fd(&s->out_fd);
	close_fd(&s->err_fd);
	free(s->inbuf);
	memset(s, 0, sizeof *s);
	s->in_fd = s->out_fd = s->err_fd = -1;
}

void mux_conn_gone(struct conn *c) {
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (ses[i].c == c) session_free(&ses[i], 1);
}

static void protocol_error(struct conn *c, const char *why) {
	logmsg("protocol error: %s; resetting the connection", why);
	send_frame(c, F_ERROR, 0, why, strlen(why));
	conn_flush(c);
	conn_close(c); /* calls mux_conn_gone */
}

static void op_stat(struct out *o, const char *path) {
	struct stat st;
	if (lstat(path, &st) != 0) {
		out_str(o, "{\"ok\":true,\"exists\":false}");
		return;
	}
	const char *t = S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : S_ISLNK(st.st_mode) ? "symlink" : "other";
	out_fmt(o, "{\"ok\":true,\"exists\":true,\"type\":\"%s\",\"mode\":%u,\"size\":%lld}", t, (unsigned)st.st_mode & 07777, (long long)st.st_size);
}

/* Splits an absolute path into the directory to run tar in and the member name. */
static int split_path(char *path, char **dir, char **base) {
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/') path[--n] = 0;
	if (path[0] != '/') return -1;
	if (n == 1) { *dir = "/"; *base = "."; return 0; }
	char *slash = strrchr(path, '/');
	*base = slash + 1;
	if (slash == path) *dir = "/";
	else { *slash = 0; *dir = path; }
	return 0;
}

static void start_session(struct conn *c, uint32_t id, struct request *r) {
	struct session *s = NULL;
	for (int i = 0; i < MAX_SESSIONS && !s; i++)
		if (!ses[i].c) s = &ses[i];
	if (!s) return reply_error(c, id, "too many sessions running in this guest", 0);
	char err[600], *dir = "/", *base = NULL, pathbuf[4096];
	char *tar_argv[10];
	char *const *argv = r->argv;
	int code = 0;
	struct stat st;
	if (!strcmp(r->op, "exec")) {
		if (!r->argv || !r->argv[0]) return reply_error(c, id, "exec: \"argv\" must name a command", 0);
	} else {
		if (!r->path || r->path[0] != '/' || strlen(r->path) >= sizeof pathbuf) return reply_error(c, id, "\"path\" must be an absolute path", 0);
		snprintf(pathbuf, sizeof pathbuf, "%s", r->path);
		if (lstat(pathbuf, &st) != 0) {
			snprintf(err, sizeof err, "%s: %s", r->path, strerror(errno));
			return reply_error(c, id, err, 0);
		}
		int i = 0;
		tar_argv[i++] = "tar";
		if (!strcmp(r->op, "tar-out")) {
			split_path(pathbuf, &dir, &base);
			tar_argv[i++] = "-c";
			tar_argv[i++] = "-f";
		} else {
			if (!S_ISDIR(st.st_mode)) {
				snprintf(err, sizeof err, "%s: not a directory", r->path);
				return reply_error(c, id, err, 0);
			}
			dir = pathbuf;
			base = NULL;
			tar_argv[i++] = "-x";
			tar_argv[i++] = "-p";
			tar_argv[i++] = "-f";
		}
		tar_argv[i++] = "-";
		tar_argv[i++] = "--numeric-owner";
		tar_argv[i++] = "-C";
		tar_argv[i++] = dir;
		if (base) tar_argv[i++] = base;
		tar_argv[i] = NULL;
		argv = tar_argv;
		free(r->user); r->user = NULL;
		free(r->workdir); r->workdir = NULL;
		r->tty = 0;
	}
	struct spawned sp;
	if (spawn_request(r, argv, &sp, err, sizeof err, &code) != 0) return reply_error(c, id, err, code);
	s->c = c;
	s->id = id;
	s->pid = sp.pid;
	s->in_fd = sp.in_fd;
	s->out_fd = sp.out_fd;
	s->err_fd = sp.err_fd;
	s->tty = r->tty;
	s->out_credit = WINDOW;
	s->in_allow = WINDOW;
	s->inbuf = malloc(WINDOW);
	struct out o = {0};
	out_fmt(&o, "{\"ok\":true,\"pid\":%d}", (int)sp.pid);
	send_json(c, F_REPLY, id, &o);
}

static void on_request(struct conn *c, uint32_t id, const char *p, size_t n) {
	struct request r;
	const char *err;
	if (id == 0) return protocol_error(c, "a request needs a stream id other than 0");
	if (find(c, id)) return protocol_error(c, "a request reused a stream id that is still open");
	if (req_parse(p, n, &r, &err)) return reply_error(c, id, err, 0);
	struct out o = {0};
	if (!strcmp(r.op, "health")) op_health(&o);
	else if (!strcmp(r.op, "ports")) op_ports(&o);
	else if (!strcmp(r.op, "stat")) {
		if (!r.path || r.path[0] != '/') out_str(&o, "{\"ok\":false,\"error\":\"\\\"path\\\" must be an absolute path\"}");
		else op_stat(&o, r.path);
	} else if (!strcmp(r.op, "set-clock")) {
		op_set_clock(&o, r.unix_ms);
	} else if (!strcmp(r.op, "identity")) {
		op_identity(&o, &r);
	} else if (!strcmp(r.op, "exec") || !strcmp(r.op, "tar-out") || !strcmp(r.op, "tar-in")) {
		start_session(c, id, &r);
	} else out_str(&o, "{\"ok\":false,\"error\":\"unknown op\"}");
	if (o.p) send_json(c, F_REPLY, id, &o);
	req_free(&r);
}

static void on_frame(struct conn *c, int type, uint32_t id, const char *p, size_t n) {
	if (!c->hello && type != F_HELLO) return protocol_error(c, "the first frame must be HELLO");
	if (type == F_HELLO) {
		struct out o = {0};
		if (!strstr(p, "\"proto\":2")) return protocol_error(c, "unsupported protocol version (this agent speaks 2)");
		c->hello = 1;
		out_fmt(&o, "{\"proto\":%d,\"agent\":\"" AGENT_NAME "\",\"version\":\"" AGENT_VERSION "\"}", PROTO_VERSION);
		return send_json(c, F_HELLO, 0, &o);
	}
	if (type == F_REQUEST) return on_request(c, id, p, n);
	if (type < F_STDIN || type > F_CLOSE || type == F_STDOUT || type == F_STDERR || type == F_EXIT) return protocol_error(c, "unexpected frame type");
	struct session *s = find(c, id);
	if (!s) return; /* the stream already ended: late frames are fine */
	switch (type) {
	case F_STDIN:
		if ((long)n > s->in_allow) return protocol_error(c, "stdin beyond the granted credit");
		s->in_allow -= (long)n;
		if (s->in_fd >= 0 && !s->eof) {
			memcpy(s->inbuf + s->inlen, p, n);
			s->inlen += n;
		} else s->in_consumed += (long)n;
		break;
	case F_EOF:
		if (s->tty && !s->eof && s->inlen < WINDOW) s->inbuf[s->inlen++] = 4; /* ^D */
		s->eof = 1;
		break;
	case F_SIGNAL:
		if (n == 1 && p[0] > 0 && p[0] < 65 && !s->exited && kill(-s->pid, p[0]) != 0) kill(s->pid, p[0]);
		break;
	case F_RESIZE:
		if (n == 4 && s->tty) {
			struct winsize ws = {.ws_row = (unsigned short)((unsigned char)p[0] << 8 | (unsigned char)p[1]), .ws_col = (unsigned short)((unsigned char)p[2] << 8 | (unsigned char)p[3])};
			ioctl(s->out_fd, TIOCSWINSZ, &ws);
		}
		break;
	case F_CREDIT:
		if (n == 4) s->out_credit += get32((const unsigned char *)p);
		if (s->out_credit > 64L * WINDOW) s->out_credit = 64L * WINDOW;
		break;
	case F_CLOSE:
		session_free(s, 1);
		break;
	}
}

void mux_input(struct conn *c, const char *buf, size_t n) {
	while (n && c->fd >= 0) {
		size_t need = c->inlen < 4 ? 4 : 4 + get32((unsigned char *)c->in);
		if (c->inlen >= 4 && (need < FRAME_HDR || need > FRAME_HDR + MAX_PAYLOAD)) return protocol_error(c, "frame length out of range");
		size_t take = need - c->inlen < n ? need - c->inlen : n;
		memcpy(c->in + c->inlen, buf, take);
		c->inlen += take;
		buf += take;
		n -= take;
		if (c->inlen >= 4 && c->inlen == 4 + get32((unsigned char *)c->in)) {
			if (c->inlen < FRAME_HDR) return protocol_error(c, "frame length out of range");
			c->in[c->inlen] = 0;
			size_t len = c->inlen - FRAME_HDR;
			c->inlen = 0;
			on_frame(c, (unsigned char)c->in[4], get32((unsigned char *)c->in + 5), c->in + FRAME_HDR, len);
		}
	}
}

/* ---- polling session fds ------------------------------------------------------------- */

static struct { struct session *s; int which; } tags[MAX_SESSIONS * 3];

int mux_poll_fill(struct pollfd *pfd, int max) {
	int n = 0;
	for (int i = 0; i < MAX_SESSIONS && n + 3 <= max; i++) {
		struct session *s = &ses[i];
		if (!s->c) continue;
		int can_read = s->out_credit > 0 && conn_queued(s->c) < QUEUE_HIGH;
		int fds[3] = {s->out_fd, s->err_fd, s->in_fd};
		for (int k = 0; k < 3; k++) {
			short ev = k < 2 ? (can_read ? POLLIN : 0) : (s->inlen ? POLLOUT : 0);
			if (fds[k] < 0 || !ev) continue;
			pfd[n] = (struct pollfd){.fd = fds[k], .events = ev};
			tags[n].s = s;
			tags[n++].which = k;
		}
	}
	return n;
}

static void pump_stdin(struct session *s) {
	if (s->in_fd >= 0 && s->inlen) {
		ssize_t w = write(s->in_fd, s->inbuf, s->inlen);
		if (w > 0) {
			memmove(s->inbuf, s->inbuf + w, s->inlen - (size_t)w);
			s->inlen -= (size_t)w;
			s->in_consumed += w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) { /* child closed stdin */
			s->in_consumed += (long)s->inlen;
			s->inlen = 0;
			if (!s->tty) close_fd(&s->in_fd);
		}
	}
	if (s->in_consumed >= CREDIT_BATCH || (s->in_consumed && !s->inlen)) {
		unsigned char b[4];
		put32(b, (uint32_t)s->in_consumed);
		send_frame(s->c, F_CREDIT, s->id, b, 4);
		s->in_allow += s->in_consumed;
		s->in_consumed = 0;
	}
	if (s->eof && !s->inlen && !s->tty) close_fd(&s->in_fd);
}

static void maybe_exit(struct session *s) {
	if (!s->exited || s->out_fd >= 0 || s->err_fd >= 0) return;
	struct out o = {0};
	if (WIFSIGNALED(s->status)) out_fmt(&o, "{\"code\":%d,\"signal\":%d}", 128 + WTERMSIG(s->status), WTERMSIG(s->status));
	else out_fmt(&o, "{\"code\":%d}", WEXITSTATUS(s->status));
	send_json(s->c, F_EXIT, s->id, &o);
	session_free(s, 0);
}

void mux_poll_done(const struct pollfd *pfd, int n) {
	static char buf[MAX_PAYLOAD];
	for (int i = 0; i < n; i++) {
		struct session *s = tags[i].s;
		if (!pfd[i].revents || !s->c) continue;
		if (tags[i].which == 2) { pump_stdin(s); continue; }
		int *fd = tags[i].which == 0 ? &s->out_fd : &s->err_fd;
		if (*fd != pfd[i].fd) continue; /* closed meanwhile */
		size_t want = s->out_credit < MAX_PAYLOAD ? (size_t)s->out_credit : MAX_PAYLOAD;
		ssize_t r = read(*fd, buf, want);
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
		if (r <= 0) { /* EOF, or EIO on a pty whose child side is gone */
			close_fd(fd);
			if (fd == &s->out_fd && s->tty) close_fd(&s->in_fd);
			maybe_exit(s);
			continue;
		}
		s->out_credit -= r;
		send_frame(s->c, tags[i].which == 0 ? F_STDOUT : F_STDERR, s->id, buf, (size_t)r);
	}
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (ses[i].c) pump_stdin(&ses[i]);
}

void mux_reap(void) {
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (int i = 0; i < MAX_SESSIONS; i++) {
			if (ses[i].c && ses[i].pid == pid) {
				ses[i].exited = 1;
				ses[i].status = st;
				maybe_exit(&ses[i]);
			}
		}
	}
}
