/*
 * Shared declarations of banger-vsock-agent (see banger-vsock-agent.c for the contract and
 * src/guest/README.md for protocol v2).
 */
#ifndef BANGER_AGENT_H
#define BANGER_AGENT_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_NAME "banger-vsock-agent"
#define AGENT_VERSION "4" /* 3: set-clock; 4: identity; every request of version 2 is answered as before */
#define PROTO_VERSION 2

/* ---- protocol v2 constants (mirrored in src/core/agent-proto.ts) ---- */
#define FRAME_HDR 9               /* u32 length (type+stream+payload), u8 type, u32 stream */
#define MAX_PAYLOAD 65536         /* larger frames are a protocol error */
#define WINDOW 262144             /* initial credit per stream and direction (bytes) */
#define MAX_SESSIONS 32           /* exec/tar sessions at once, all connections together */

enum frame_type {
	F_HELLO = 1,   /* stream 0, JSON both ways */
	F_REQUEST = 2, /* JSON {"op":...} host->agent, opens a stream */
	F_REPLY = 3,   /* JSON agent->host; ends the stream unless it is a started session */
	F_STDIN = 4,
	F_STDOUT = 5,
	F_STDERR = 6,
	F_EOF = 7,     /* host->agent: stdin is finished */
	F_SIGNAL = 8,  /* u8 signal number */
	F_RESIZE = 9,  /* u16 rows, u16 cols */
	F_EXIT = 10,   /* JSON {"code":N[,"signal":S]}; ends the stream */
	F_CREDIT = 11, /* u32 bytes the receiver may send more on this stream */
	F_CLOSE = 12,  /* host->agent: abandon the stream (process group killed) */
	F_ERROR = 15,  /* stream 0, text: protocol error; the connection is reset */
};

/* ---- growable output buffer with JSON helpers (json.c) ---- */
struct out {
	char *p;
	size_t len, cap;
};
void out_put(struct out *o, const void *s, size_t n);
void out_str(struct out *o, const char *s);
void out_fmt(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void out_json_string(struct out *o, const char *s);

/* Version 1 (newline-delimited JSON) and the shared health/ports answers. */
void v1_handle_line(const char *line, struct out *o);
void op_health(struct out *o);
void op_ports(struct out *o);

/* A parsed v2 request (json.c). Strings are malloc'd; free with req_free. */
struct request {
	char op[32];
	char **argv; /* NULL-terminated */
	char **env;  /* NULL-terminated */
	char *workdir, *user, *path;
	int tty, rows, cols;
	long long unix_ms; /* set-clock: the host's wall clock, ms since the epoch; 0 when absent */
	/* identity (identity.c): strings as sent, validated there; prefix_len -1 when absent */
	char *mac, *ip, *gateway, *hostname, *machine_id, *seed, *key_priv, *key_pub;
	int prefix_len;
};
int req_parse(const char *json, size_t len, struct request *r, const char **err);
void req_free(struct request *r);

/* ---- the guest's wall clock (clock.c) ---- */
/* How set-clock applies: to the system clock (the agent serves the guest's own channels),
 * to a file (--fake-clock FILE, tests), or not at all (test channels without --fake-clock). */
enum { CLOCK_SYSTEM, CLOCK_FILE, CLOCK_REFUSE };
extern int clock_mode;
extern const char *clock_file;
void op_set_clock(struct out *o, long long unix_ms);
/* Sets the clock as clock_mode says; 0 with *step_ms (how far it moved), or -1 with err. */
int clock_apply(long long unix_ms, long long *step_ms, char *err, size_t cap);

/* ---- identity after a snapshot restore (identity.c) ---- */
void op_identity(struct out *o, const struct request *r);

/* ---- spawning (spawn.c) ---- */
struct spawned {
	pid_t pid;
	int in_fd, out_fd, err_fd; /* err_fd is -1 with a pty */
};
/* Starts argv as described by r; on failure returns -1 and writes a message to err. */
int spawn_request(const struct request *r, char *const *argv, struct spawned *s, char *err, size_t errcap, int *exit_code);

/* ---- connections (banger-vsock-agent.c owns them, mux.c speaks v2 on them) ---- */
#define MAX_LINE 4096
enum { K_ACCEPTED, K_PORT, K_STDIO };
enum { M_UNKNOWN, M_V1, M_V2 };
struct conn {
	int fd;     /* -1 when unused */
	int out_fd; /* where responses go (differs from fd only for --stdio) */
	int kind, mode, hello, overflow;
	char *in;   /* v1: the current line; v2: the current frame */
	size_t inlen;
	struct out q; /* bytes queued for out_fd */
	size_t qoff;
};
void conn_close(struct conn *c);
void conn_queue(struct conn *c, const void *p, size_t n);
int conn_flush(struct conn *c); /* -1 when the connection failed (and was closed) */
size_t conn_queued(const struct conn *c);

/* mux.c: protocol v2 framing and sessions. */
struct pollfd;
void mux_input(struct conn *c, const char *buf, size_t n); /* bytes read from a v2 connection */
void mux_conn_gone(struct conn *c);                        /* kill the connection's sessions */
int mux_poll_fill(struct pollfd *pfd, int max);            /* session fds to poll; returns count */
void mux_poll_done(const struct pollfd *pfd, int n);       /* handles their events */
void mux_reap(void);                                       /* collects exited children */

/* ---- misc (banger-vsock-agent.c) ---- */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long long now_ms(void);
void set_nonblock(int fd);
#endif
