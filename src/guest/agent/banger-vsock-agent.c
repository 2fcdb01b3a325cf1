/*
 * banger-vsock-agent: the guest side of banger's agent channel.
 *
 * Two protocols, chosen per connection by its first byte:
 *   - version 2 (first byte 0x00, the top byte of a frame length): binary frames multiplexing
 *     requests and exec / tar sessions over one byte stream; see mux.c and src/guest/README.md.
 *   - version 1 (first byte '{' or whitespace): newline-delimited JSON, one request per line,
 *     one response line per request: {"op":"health"}, {"op":"ports"}; anything else gets
 *     {"ok":false,"error":"unknown op"|"bad request"|"request too long"}.
 *   The agent never exits because of a request.
 *
 * Channels (all served at once from one poll loop):
 *   - AF_VSOCK, listening on port 1024 (Firecracker's hybrid vsock). Only the host (peer CID 2)
 *     is accepted: a process inside the guest cannot reach the agent through vsock loopback.
 *   - The virtio-serial port named "banger.agent" (QEMU): /dev/virtio-ports/banger.agent, or,
 *     when udev is absent (minimal images), the /dev/vportNpM node whose
 *     /sys/class/virtio-ports/vportNpM/name is "banger.agent". When the host side is not
 *     connected the port reports HUP/EOF; the agent then closes it (killing that connection's
 *     sessions) and reopens it shortly after.
 *   - For tests and debugging: --stdio (stdin/stdout, exit on EOF), --channel PATH (a character
 *     device or pty treated like the virtio port, reopened on EOF/HUP), --unix PATH (a listening
 *     Unix socket). Naming any of these replaces the default channels unless --vsock-port is
 *     also given, and makes set-clock refuse (the agent is on a host) unless --fake-clock FILE
 *     names a file to write the time to instead (clock.c).
 *
 * Static C, no runtime dependencies: gcc -static -O2 -Wall -Wextra (scripts/build-agent.sh).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"

#define PORT_NAME "banger.agent"
#define DEFAULT_VSOCK_PORT 1024
#define MAX_CONNS 16
#define REOPEN_MS 500
#define RESCAN_MS 2000
#define LISTEN_RETRY_MS 5000

static struct conn conns[MAX_CONNS];
static int vsock_listen_fd = -1, unix_listen_fd = -1;
static long long next_port_try_ms, next_vsock_try_ms;
static int vsock_fail_logged, port_missing_logged;

/* Options. */
static int opt_vsock = 1, opt_vsock_port = DEFAULT_VSOCK_PORT, opt_port = 1, opt_stdio = 0;
static const char *opt_channel = NULL, *opt_unix = NULL;

void logmsg(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fputs(AGENT_NAME ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void set_nonblock(int fd) {
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- channels ------------------------------------------------------------------------ */

#define MAX_QUEUE (64 * 1024 * 1024) /* a host that never reads: the connection is dropped */

static struct conn *conn_add(int fd, int out_fd, int kind) {
	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &conns[i];
		if (c->fd >= 0) continue;
		if (!c->in && !(c->in = malloc(FRAME_HDR + MAX_PAYLOAD + 1))) return NULL;
		c->fd = fd;
		c->out_fd = out_fd;
		c->kind = kind;
		c->mode = M_UNKNOWN;
		c->hello = c->overflow = 0;
		c->inlen = 0;
		c->q.len = c->qoff = 0;
		return c;
	}
	return NULL;
}

void conn_close(struct conn *c) {
	if (c->fd < 0) return;
	mux_conn_gone(c);
	if (c->kind == K_STDIO) {
		logmsg("stdin closed; exiting");
		exit(0);
	}
	close(c->fd);
	c->fd = -1;
	c->q.len = c->qoff = 0;
	if (c->kind == K_PORT) next_port_try_ms = now_ms() + REOPEN_MS;
}

size_t conn_queued(const struct conn *c) { return c->q.len - c->qoff; }

void conn_queue(struct conn *c, const void *p, size_t n) {
	if (c->fd < 0) return;
	if (conn_queued(c) + n > MAX_QUEUE) {
		logmsg("host does not read; dropping the connection");
		conn_close(c);
		return;
	}
	if (c->qoff && c->qoff == c->q.len) c->q.len = c->qoff = 0;
	if (c->qoff > (1 << 20)) {
		memmove(c->q.p, c->q.p + c->qoff, c->q.len - c->qoff);
		c->q.len -= c->qoff;
		c->qoff = 0;
	}
	out_put(&c->q, p, n);
}

/* Writes what the fd takes now; the poll loop waits for POLLOUT for the rest. */
int conn_flush(struct conn *c) {
	while (c->fd >= 0 && conn_queued(c)) {
		ssize_t n = write(c->out_fd, c->q.p + c->qoff, conn_queued(c));
		if (n > 0) {
			c->qoff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
		conn_close(c);
		return -1;
	}
	return 0;
}

/* Finds the virtio-serial port device; returns 0 and fills path, or -1. */
static int find_port(char *path, size_t cap) {
	if (opt_channel) {
		snprintf(path, cap, "%s", opt_channel);
		return access(path, F_OK) == 0 ? 0 : -1;
	}
	snprintf(path, cap, "/dev/virtio-ports/" PORT_NAME);
	if (access(path, F_OK) == 0) return 0;
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d) return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(d)) && found < 0) {
		if (e->d_name[0] == '.') continue;
		char np[512], name[128] = "";
		snprintf(np, sizeof np, "/sys/class/virtio-ports/%s/name", e->d_name);
		FILE *f = fopen(np, "r");
		if (!f) continue;
		if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
		fclose(f);
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(path, cap, "/dev/%s", e->d_name);
			found = access(path, F_OK) == 0 ? 0 : -1;
		}
	}
	closedir(d);
	return found;
}

static int port_open(void) {
	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i].fd >= 0 && conns[i].kind == K_PORT) return 0;
	if (now_ms() < next_port_try_ms) return -1;
	char path[512];
	if (find_port(path, sizeof path) != 0) {
		if (!port_missing_logged) logmsg("agent port %s not present yet; will keep looking", opt_channel ? opt_channel : PORT_NAME);
		port_missing_logged = 1;
		next_port_try_ms = now_ms() + RESCAN_MS;
		return -1;
	}
	int fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		next_port_try_ms = now_ms() + REOPEN_MS;
		return -1;
	}
	if (isatty(fd)) {
		struct termios t;
		if (tcgetattr(fd, &t) == 0) {
			cfmakeraw(&t);
			tcsetattr(fd, TCSANOW, &t);
		}
	}
	if (port_missing_logged) logmsg("opened %s", path);
	port_missing_logged = 0;
	if (!conn_add(fd, fd, K_PORT)) {
		close(fd);
		return -1;
	}
	return 0;
}

static int listen_vsock(void) {
	if (vsock_listen_fd >= 0 || now_ms() < next_vsock_try_ms) return 0;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_vm sa;
	memset(&sa, 0, sizeof sa);
	sa.svm_family = AF_VSOCK;
	sa.svm_cid = VMADDR_CID_ANY;
	sa.svm_port = (unsigned)opt_vsock_port;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) {
		if (!vsock_fail_logged) logmsg("vsock port %d unavailable (%s); will retry", opt_vsock_port, strerror(errno));
		vsock_fail_logged = 1;
		if (fd >= 0) close(fd);
		next_vsock_try_ms = now_ms() + LISTEN_RETRY_MS;
		return -1;
	}
	set_nonblock(fd);
	logmsg("listening on vsock port %d", opt_vsock_port);
	vsock_listen_fd = fd;
	return 0;
}

static int listen_unix(const char *path) {
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (fd < 0 || strlen(path) >= sizeof sa.sun_path) return -1;
	strcpy(sa.sun_path, path);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) {
		close(fd);
		return -1;
	}
	set_nonblock(fd);
	return fd;
}

static void accept_on(int lfd) {
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) return;
	if (lfd == vsock_listen_fd && (ss.ss_family != AF_VSOCK || ((struct sockaddr_vm *)&ss)->svm_cid != VMADDR_CID_HOST)) {
		logmsg("refused a vsock connection from CID %u: only the host (CID 2) may connect", ss.ss_family == AF_VSOCK ? ((struct sockaddr_vm *)&ss)->svm_cid : 0);
		close(fd);
		return;
	}
	if (!conn_add(fd, fd, K_ACCEPTED)) close(fd); /* too many clients: refuse by closing */
}

/* Reads what is available: picks the protocol on the first byte, then serves it. */
static void conn_read(struct conn *c) {
	static char tmp[65536];
	ssize_t n = read(c->fd, tmp, sizeof tmp);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
	if (n <= 0) { /* EOF, EIO (pty master gone), ENODEV ... */
		conn_close(c);
		return;
	}
	if (c->mode == M_UNKNOWN) c->mode = tmp[0] == 0 ? M_V2 : M_V1;
	if (c->mode == M_V2) {
		mux_input(c, tmp, (size_t)n);
		return;
	}
	for (ssize_t i = 0; i < n && c->fd >= 0; i++) {
		char ch = tmp[i];
		if (ch != '\n') {
			if (c->overflow) continue;
			if (c->inlen >= MAX_LINE) {
				c->overflow = 1;
				continue;
			}
			c->in[c->inlen++] = ch;
			continue;
		}
		struct out o = {0};
		if (c->overflow) {
			out_str(&o, "{\"ok\":false,\"error\":\"request too long\"}\n");
		} else {
			c->in[c->inlen] = 0;
			/* blank lines (e.g. a bare newline used to probe) get no answer */
			const char *p = c->in;
			while (*p == ' ' || *p == '\t' || *p == '\r') p++;
			if (*p) v1_handle_line(c->in, &o);
		}
		c->inlen = 0;
		c->overflow = 0;
		if (o.len) conn_queue(c, o.p, o.len);
		free(o.p);
	}
}

static int sigchld_pipe[2] = {-1, -1};
static void on_sigchld(int sig) {
	(void)sig;
	int e = errno;
	if (write(sigchld_pipe[1], "x", 1) < 0) { /* pipe full: a wakeup is pending anyway */ }
	errno = e;
}

static void usage(FILE *f) {
	fputs("usage: " AGENT_NAME " [--vsock-port N] [--no-vsock] [--no-port] [--channel PATH]\n"
	      "                          [--unix PATH] [--stdio] [--fake-clock FILE] [--version]\n"
	      "Serves banger's guest agent protocol (newline-delimited JSON: health, ports).\n"
	      "Default: AF_VSOCK port 1024 and the virtio-serial port '" PORT_NAME "'.\n",
	      f);
}

int main(int argc, char **argv) {
	int explicit_vsock = 0, explicit_channel = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--vsock-port") && i + 1 < argc) {
			opt_vsock_port = atoi(argv[++i]);
			explicit_vsock = 1;
		} else if (!strcmp(a, "--no-vsock")) {
			opt_vsock = 0;
		} else if (!strcmp(a, "--no-port")) {
			opt_port = 0;
		} else if (!strcmp(a, "--channel") && i + 1 < argc) {
			opt_channel = argv[++i];
			explicit_channel = 1;
		} else if (!strcmp(a, "--unix") && i + 1 < argc) {
			opt_unix = argv[++i];
			explicit_channel = 1;
		} else if (!strcmp(a, "--fake-clock") && i + 1 < argc) {
			clock_file = argv[++i];
		} else if (!strcmp(a, "--stdio")) {
			opt_stdio = 1;
			explicit_channel = 1;
		} else if (!strcmp(a, "--version")) {
			puts(AGENT_NAME " " AGENT_VERSION);
			return 0;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (explicit_channel) {
		if (!explicit_vsock) opt_vsock = 0;
		if (!opt_channel) opt_port = 0;
	}
	/* set-clock sets the system clock only when the agent serves a guest's own channels: on
	 * test channels it runs on a host (clock.c). */
	clock_mode = clock_file ? CLOCK_FILE : explicit_channel ? CLOCK_REFUSE : CLOCK_SYSTEM;
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) == 0) {
		struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
		sigaction(SIGCHLD, &sa, NULL);
	}
	for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

	if (opt_stdio) {
		set_nonblock(0);
		set_nonblock(1);
		conn_add(0, 1, K_STDIO);
	}
	if (opt_unix) {
		unix_listen_fd = listen_unix(opt_unix);
		if (unix_listen_fd < 0) {
			logmsg("cannot listen on %s: %s", opt_unix, strerror(errno));
			return 1;
		}
	}
	logmsg("version %s (protocol %d) starting", AGENT_VERSION, PROTO_VERSION);

	enum { NPFD = MAX_CONNS * 2 + 3 + MAX_SESSIONS * 3 };
	for (;;) {
		if (opt_vsock) listen_vsock();
		if (opt_port) port_open();

		struct pollfd pfd[NPFD];
		struct conn *owner[NPFD];
		int n = 0;
		if (vsock_listen_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = vsock_listen_fd, .events = POLLIN};
			owner[n++] = NULL;
		}
		if (unix_listen_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = unix_listen_fd, .events = POLLIN};
			owner[n++] = NULL;
		}
		if (sigchld_pipe[0] >= 0) {
			pfd[n] = (struct pollfd){.fd = sigchld_pipe[0], .events = POLLIN};
			owner[n++] = NULL;
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &conns[i];
			if (c->fd < 0) continue;
			/* A connection whose queue is long is not read until the host catches up. */
			pfd[n] = (struct pollfd){.fd = c->fd, .events = conn_queued(c) > (4 << 20) ? 0 : POLLIN};
			owner[n++] = c;
			if (conn_queued(c)) {
				pfd[n] = (struct pollfd){.fd = c->out_fd, .events = POLLOUT};
				owner[n++] = c;
			}
		}
		int nconn = n;
		n += mux_poll_fill(pfd + n, NPFD - n);
		/* Wake up periodically to retry channels that are missing. */
		int timeout = ((opt_port || opt_vsock) ? REOPEN_MS : -1);
		int r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0) {
			if (errno == EINTR) continue;
			logmsg("poll: %s", strerror(errno));
			sleep(1);
			continue;
		}
		for (int i = 0; i < nconn; i++) {
			if (!pfd[i].revents) continue;
			struct conn *c = owner[i];
			if (!c) {
				if (pfd[i].fd == sigchld_pipe[0]) {
					char drain[64];
					while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {}
				} else accept_on(pfd[i].fd);
			} else if (c->fd < 0) {
				continue;
			} else if (pfd[i].events & POLLOUT) {
				if (pfd[i].revents & (POLLOUT | POLLERR | POLLHUP)) conn_flush(c);
			} else if (pfd[i].revents & POLLIN) {
				conn_read(c); /* drains data first; EOF closes */
			} else if (pfd[i].revents & (POLLHUP | POLLERR | POLLNVAL)) {
				conn_close(c); /* virtio port with no host connected: reopen later */
			}
		}
		mux_poll_done(pfd + nconn, n - nconn);
		mux_reap();
		for (int i = 0; i < MAX_CONNS; i++)
			if (conns[i].fd >= 0 && conn_queued(&conns[i])) conn_flush(&conns[i]);
	}
}
