/*
 * banger-vsock-agent: the guest side of banger's agent channel.
 *
 * Contract (shared with the host's VM service):
 *   - Transport: newline-delimited JSON, one request per line, one response line per request.
 *   - {"op":"health"} -> {"ok":true,"agent":"banger-vsock-agent","version":"1",
 *                         "uptimeSeconds":N,"hostname":"..."}
 *   - {"op":"ports"}  -> {"ok":true,"ports":[{"proto":"tcp","port":22,"address":"0.0.0.0"},...]}
 *                        (TCP sockets in LISTEN state from /proc/net/tcp and /proc/net/tcp6;
 *                        IPv6 entries have an IPv6 address such as "::")
 *   - unknown op      -> {"ok":false,"error":"unknown op"}
 *   - not a JSON object with a string "op" -> {"ok":false,"error":"bad request"}
 *   - a line longer than MAX_LINE bytes   -> {"ok":false,"error":"request too long"}
 *   The agent never exits because of a request.
 *
 * Channels (all served at once from one poll loop):
 *   - AF_VSOCK, listening on port 1024 (Firecracker's hybrid vsock; any CID).
 *   - The virtio-serial port named "banger.agent" (QEMU): /dev/virtio-ports/banger.agent, or,
 *     when udev is absent (minimal images), the /dev/vportNpM node whose
 *     /sys/class/virtio-ports/vportNpM/name is "banger.agent". When the host side is not
 *     connected the port reports HUP/EOF; the agent then closes it and reopens it shortly after.
 *   - For tests and debugging: --stdio (stdin/stdout, exit on EOF), --channel PATH (a character
 *     device or pty treated like the virtio port, reopened on EOF/HUP), --unix PATH (a listening
 *     Unix socket). Naming any of these replaces the default channels unless --vsock-port is
 *     also given.
 *
 * Static C, no runtime dependencies: gcc -static -O2 -Wall -Wextra.
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

#define AGENT_NAME "banger-vsock-agent"
#define AGENT_VERSION "1"
#define PORT_NAME "banger.agent"
#define DEFAULT_VSOCK_PORT 1024
#define MAX_LINE 4096
#define MAX_CONNS 16
#define REOPEN_MS 500
#define RESCAN_MS 2000
#define LISTEN_RETRY_MS 5000
#define WRITE_TIMEOUT_MS 2000

/* One byte stream we answer on. */
struct conn {
	int fd;      /* -1 when unused */
	int out_fd;  /* where responses go (differs from fd only for --stdio) */
	int kind;    /* K_ACCEPTED, K_PORT, K_STDIO */
	char buf[MAX_LINE + 1];
	size_t len;
	int overflow; /* discarding the rest of an over-long line */
};

enum { K_ACCEPTED, K_PORT, K_STDIO };

static struct conn conns[MAX_CONNS];
static int vsock_listen_fd = -1, unix_listen_fd = -1;
static long long next_port_try_ms, next_vsock_try_ms;
static int vsock_fail_logged, port_missing_logged;

/* Options. */
static int opt_vsock = 1, opt_vsock_port = DEFAULT_VSOCK_PORT, opt_port = 1, opt_stdio = 0;
static const char *opt_channel = NULL, *opt_unix = NULL;

static void logmsg(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fputs(AGENT_NAME ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_nonblock(int fd) {
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- output buffer with JSON string escaping ---------------------------------------- */

struct out {
	char *p;
	size_t len, cap;
};

static void out_put(struct out *o, const char *s, size_t n) {
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 512;
		while (o->len + n + 1 > cap) cap *= 2;
		char *np = realloc(o->p, cap);
		if (!np) return; /* out of memory: drop output rather than crash */
		o->p = np;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = 0;
}

static void out_str(struct out *o, const char *s) { out_put(o, s, strlen(s)); }

static void out_fmt(struct out *o, const char *fmt, ...) {
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0) out_put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void out_json_string(struct out *o, const char *s) {
	out_str(o, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			out_put(o, e, 2);
		} else if (c < 0x20) {
			out_fmt(o, "\\u%04x", c);
		} else {
			out_put(o, (const char *)&c, 1);
		}
	}
	out_str(o, "\"");
}

/* ---- requests ------------------------------------------------------------------------ */

static void skip_ws(const char **p) {
	while (**p == ' ' || **p == '\t' || **p == '\r' || **p == '\n') (*p)++;
}

/*
 * Extracts the value of the top-level "op" string member of a JSON object into op (at most
 * cap-1 bytes). Returns 0 on success, -1 if the line is not an object with a string "op".
 * Deliberately small: it scans members, skipping values it does not need.
 */
static int skip_value(const char **p);

static int parse_string(const char **p, char *dst, size_t cap) {
	size_t n = 0;
	if (**p != '"') return -1;
	(*p)++;
	while (**p && **p != '"') {
		char c = **p;
		if (c == '\\') {
			(*p)++;
			if (!**p) return -1;
			c = **p;
			if (c == 'u') { /* keep escapes opaque; "op" values are plain ASCII */
				for (int i = 0; i < 4; i++) {
					(*p)++;
					if (!**p) return -1;
				}
				c = '?';
			}
		}
		if (dst && n + 1 < cap) dst[n++] = c;
		(*p)++;
	}
	if (**p != '"') return -1;
	(*p)++;
	if (dst) dst[n < cap ? n : cap - 1] = 0;
	return 0;
}

static int skip_value(const char **p) {
	skip_ws(p);
	if (**p == '"') return parse_string(p, NULL, 0);
	if (**p == '{' || **p == '[') {
		char close = **p == '{' ? '}' : ']';
		(*p)++;
		skip_ws(p);
		if (**p == close) {
			(*p)++;
			return 0;
		}
		for (;;) {
			skip_ws(p);
			if (close == '}') {
				if (parse_string(p, NULL, 0)) return -1;
				skip_ws(p);
				if (**p != ':') return -1;
				(*p)++;
			}
			if (skip_value(p)) return -1;
			skip_ws(p);
			if (**p == ',') {
				(*p)++;
				continue;
			}
			if (**p != close) return -1;
			(*p)++;
			return 0;
		}
	}
	/* number, true, false, null */
	const char *start = *p;
	while (**p && strchr("0123456789+-.eEtruefalsn", **p)) (*p)++;
	return *p == start ? -1 : 0;
}

static int parse_op(const char *line, char *op, size_t cap) {
	const char *p = line;
	int found = 0;
	skip_ws(&p);
	if (*p != '{') return -1;
	p++;
	skip_ws(&p);
	if (*p == '}') return -1;
	for (;;) {
		char key[32];
		skip_ws(&p);
		if (parse_string(&p, key, sizeof key)) return -1;
		skip_ws(&p);
		if (*p != ':') return -1;
		p++;
		skip_ws(&p);
		if (strcmp(key, "op") == 0 && *p == '"') {
			if (parse_string(&p, op, cap)) return -1;
			found = 1;
		} else if (skip_value(&p)) {
			return -1;
		}
		skip_ws(&p);
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p != '}') return -1;
		p++;
		skip_ws(&p);
		return (*p == 0 && found) ? 0 : -1;
	}
}

static void op_health(struct out *o) {
	char host[256] = "";
	double up = 0;
	FILE *f = fopen("/proc/uptime", "r");
	if (f) {
		if (fscanf(f, "%lf", &up) != 1) up = 0;
		fclose(f);
	}
	if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
	out_str(o, "{\"ok\":true,\"agent\":\"" AGENT_NAME "\",\"version\":\"" AGENT_VERSION "\",");
	out_fmt(o, "\"uptimeSeconds\":%lld,\"hostname\":", (long long)up);
	out_json_string(o, host);
	out_str(o, "}");
}

/* Appends the LISTEN sockets of one /proc/net/tcp{,6} file; returns how many. */
static int add_listeners(struct out *o, const char *path, int v6, int count) {
	FILE *f = fopen(path, "r");
	char line[512];
	if (!f) return count;
	if (!fgets(line, sizeof line, f)) { /* header */
		fclose(f);
		return count;
	}
	while (fgets(line, sizeof line, f)) {
		char local[64];
		unsigned port, state;
		if (sscanf(line, " %*d: %63[0-9A-Fa-f]:%x %*s %x", local, &port, &state) != 3) continue;
		if (state != 0x0A) continue; /* TCP_LISTEN */
		char addr[INET6_ADDRSTRLEN] = "";
		if (!v6 && strlen(local) == 8) {
			struct in_addr a;
			a.s_addr = (uint32_t)strtoul(local, NULL, 16); /* kernel prints it in host order */
			inet_ntop(AF_INET, &a, addr, sizeof addr);
		} else if (v6 && strlen(local) == 32) {
			struct in6_addr a;
			for (int i = 0; i < 4; i++) {
				char word[9];
				memcpy(word, local + i * 8, 8);
				word[8] = 0;
				uint32_t w = (uint32_t)strtoul(word, NULL, 16);
				memcpy(&a.s6_addr[i * 4], &w, 4);
			}
			inet_ntop(AF_INET6, &a, addr, sizeof addr);
		} else {
			continue;
		}
		out_str(o, count ? "," : "");
		out_fmt(o, "{\"proto\":\"tcp\",\"port\":%u,\"address\":\"%s\"}", port, addr);
		count++;
	}
	fclose(f);
	return count;
}

static void op_ports(struct out *o) {
	out_str(o, "{\"ok\":true,\"ports\":[");
	int n = add_listeners(o, "/proc/net/tcp", 0, 0);
	add_listeners(o, "/proc/net/tcp6", 1, n);
	out_str(o, "]}");
}

static void handle_line(const char *line, struct out *o) {
	char op[64];
	if (parse_op(line, op, sizeof op) != 0)
		out_str(o, "{\"ok\":false,\"error\":\"bad request\"}");
	else if (strcmp(op, "health") == 0)
		op_health(o);
	else if (strcmp(op, "ports") == 0)
		op_ports(o);
	else
		out_str(o, "{\"ok\":false,\"error\":\"unknown op\"}");
	out_str(o, "\n");
}

/* ---- channels ------------------------------------------------------------------------ */

/* Writes all of buf, waiting (bounded) when the fd is non-blocking and full. */
static int write_all(int fd, const char *buf, size_t len) {
	long long deadline = now_ms() + WRITE_TIMEOUT_MS;
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			long long left = deadline - now_ms();
			if (left <= 0) return -1;
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, (int)left);
			continue;
		}
		return -1;
	}
	return 0;
}

static struct conn *conn_add(int fd, int out_fd, int kind) {
	for (int i = 0; i < MAX_CONNS; i++) {
		if (conns[i].fd < 0) {
			conns[i].fd = fd;
			conns[i].out_fd = out_fd;
			conns[i].kind = kind;
			conns[i].len = 0;
			conns[i].overflow = 0;
			return &conns[i];
		}
	}
	return NULL;
}

static void conn_close(struct conn *c) {
	if (c->kind == K_STDIO) {
		logmsg("stdin closed; exiting");
		exit(0);
	}
	close(c->fd);
	c->fd = -1;
	if (c->kind == K_PORT) next_port_try_ms = now_ms() + REOPEN_MS;
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
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) return;
	if (!conn_add(fd, fd, K_ACCEPTED)) close(fd); /* too many clients: refuse by closing */
}

/* Reads what is available and answers every complete line. */
static void conn_read(struct conn *c) {
	char tmp[1024];
	ssize_t n = read(c->fd, tmp, sizeof tmp);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
	if (n <= 0) { /* EOF, EIO (pty master gone), ENODEV ... */
		conn_close(c);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		char ch = tmp[i];
		if (ch != '\n') {
			if (c->overflow) continue;
			if (c->len >= MAX_LINE) {
				c->overflow = 1;
				continue;
			}
			c->buf[c->len++] = ch;
			continue;
		}
		struct out o = {0};
		if (c->overflow) {
			out_str(&o, "{\"ok\":false,\"error\":\"request too long\"}\n");
		} else {
			c->buf[c->len] = 0;
			/* blank lines (e.g. a bare newline used to probe) get no answer */
			const char *p = c->buf;
			skip_ws(&p);
			if (*p) handle_line(c->buf, &o);
		}
		c->len = 0;
		c->overflow = 0;
		if (o.len && write_all(c->out_fd, o.p, o.len) != 0 && c->kind == K_ACCEPTED) {
			free(o.p);
			conn_close(c);
			return;
		}
		free(o.p);
	}
}

static void usage(FILE *f) {
	fputs("usage: " AGENT_NAME " [--vsock-port N] [--no-vsock] [--no-port] [--channel PATH]\n"
	      "                          [--unix PATH] [--stdio] [--version]\n"
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
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

	if (opt_stdio) {
		set_nonblock(0);
		conn_add(0, 1, K_STDIO);
	}
	if (opt_unix) {
		unix_listen_fd = listen_unix(opt_unix);
		if (unix_listen_fd < 0) {
			logmsg("cannot listen on %s: %s", opt_unix, strerror(errno));
			return 1;
		}
	}
	logmsg("version %s starting", AGENT_VERSION);

	for (;;) {
		if (opt_vsock) listen_vsock();
		if (opt_port) port_open();

		struct pollfd pfd[MAX_CONNS + 2];
		struct conn *owner[MAX_CONNS + 2];
		int n = 0;
		if (vsock_listen_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = vsock_listen_fd, .events = POLLIN};
			owner[n++] = NULL;
		}
		if (unix_listen_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = unix_listen_fd, .events = POLLIN};
			owner[n++] = NULL;
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			if (conns[i].fd < 0) continue;
			pfd[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
			owner[n++] = &conns[i];
		}
		/* Wake up periodically to retry channels that are missing. */
		int timeout = ((opt_port || opt_vsock) ? REOPEN_MS : -1);
		int r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0) {
			if (errno == EINTR) continue;
			logmsg("poll: %s", strerror(errno));
			sleep(1);
			continue;
		}
		for (int i = 0; i < n; i++) {
			if (!pfd[i].revents) continue;
			if (!owner[i]) {
				accept_on(pfd[i].fd);
			} else if (pfd[i].revents & POLLIN) {
				conn_read(owner[i]); /* drains data first; EOF closes */
			} else if (pfd[i].revents & (POLLHUP | POLLERR | POLLNVAL)) {
				conn_close(owner[i]); /* virtio port with no host connected: reopen later */
			}
		}
	}
}
