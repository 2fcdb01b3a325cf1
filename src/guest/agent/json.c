/*
 * JSON for banger-vsock-agent: writing replies, the version 1 line protocol (health, ports),
 * and parsing protocol v2 requests. Deliberately small: only what the requests use.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "agent.h"

/* ---- output buffer with JSON string escaping ---------------------------------------- */

void out_put(struct out *o, const void *s, size_t n) {
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

void out_str(struct out *o, const char *s) { out_put(o, s, strlen(s)); }

void out_fmt(struct out *o, const char *fmt, ...) {
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0) out_put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void out_json_string(struct out *o, const char *s) {
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

void op_health(struct out *o) {
	char host[256] = "";
	double up = 0;
	FILE *f = fopen("/proc/uptime", "r");
	if (f) {
		if (fscanf(f, "%lf", &up) != 1) up = 0;
		fclose(f);
	}
	if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
	out_fmt(o, "{\"ok\":true,\"agent\":\"" AGENT_NAME "\",\"version\":\"" AGENT_VERSION "\",\"proto\":%d,", PROTO_VERSION);
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

void op_ports(struct out *o) {
	out_str(o, "{\"ok\":true,\"ports\":[");
	int n = add_listeners(o, "/proc/net/tcp", 0, 0);
	add_listeners(o, "/proc/net/tcp6", 1, n);
	out_str(o, "]}");
}

void v1_handle_line(const char *line, struct out *o) {
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


/* ---- protocol v2 requests ------------------------------------------------------------ */

static void put_utf8(struct out *o, unsigned cp) {
	unsigned char b[4];
	size_t n;
	if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
	else if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 0x3F); n = 2; }
	else if (cp < 0x10000) { b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 0x3F); b[2] = 0x80 | (cp & 0x3F); n = 3; }
	else { b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 0x3F); b[2] = 0x80 | ((cp >> 6) & 0x3F); b[3] = 0x80 | (cp & 0x3F); n = 4; }
	out_put(o, b, n);
}

static int hex4(const char *p, unsigned *v) {
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		unsigned d = (c >= '0' && c <= '9') ? (unsigned)(c - '0') : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10) : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10) : 99;
		if (d > 15) return -1;
		*v = *v * 16 + d;
	}
	return 0;
}

/* Decodes a JSON string at *p into a malloc'd C string. A NUL character is refused. */
static char *str_alloc(const char **p) {
	struct out o = {0};
	if (**p != '"') return NULL;
	(*p)++;
	for (;;) {
		unsigned char c = (unsigned char)**p;
		if (!c || c < 0x20) goto bad;
		if (c == '"') break;
		if (c != '\\') { out_put(&o, &c, 1); (*p)++; continue; }
		(*p)++;
		c = (unsigned char)**p;
		const char *esc = strchr("\"\\/bfnrt", c);
		if (c && esc) {
			static const char map[] = "\"\\/\b\f\n\r\t";
			out_put(&o, &map[esc - "\"\\/bfnrt"], 1);
			(*p)++;
			continue;
		}
		if (c != 'u') goto bad;
		unsigned cp, lo;
		if (hex4(*p + 1, &cp)) goto bad;
		*p += 5;
		if (cp >= 0xD800 && cp < 0xDC00 && (*p)[0] == '\\' && (*p)[1] == 'u' && !hex4(*p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
			cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			*p += 6;
		}
		if (cp == 0) goto bad;
		put_utf8(&o, cp);
	}
	(*p)++;
	if (!o.p) out_put(&o, "", 0);
	if (!o.p) return NULL;
	return o.p;
bad:
	free(o.p);
	return NULL;
}

static int str_array(const char **p, char ***dst) {
	size_t n = 0, cap = 8;
	char **v = calloc(cap, sizeof *v);
	if (!v || **p != '[') goto bad;
	(*p)++;
	skip_ws(p);
	if (**p == ']') { (*p)++; *dst = v; return 0; }
	for (;;) {
		skip_ws(p);
		if (n + 2 > cap) {
			char **nv = realloc(v, (cap *= 2) * sizeof *v);
			if (!nv) goto bad;
			v = nv;
		}
		v[n] = str_alloc(p);
		if (!v[n]) goto bad;
		v[++n] = NULL;
		if (n > 4096) goto bad;
		skip_ws(p);
		if (**p == ',') { (*p)++; continue; }
		if (**p != ']') goto bad;
		(*p)++;
		*dst = v;
		return 0;
	}
bad:
	if (v) for (size_t i = 0; i < n; i++) free(v[i]);
	free(v);
	return -1;
}

void req_free(struct request *r) {
	for (char **a = r->argv; a && *a; a++) free(*a);
	for (char **a = r->env; a && *a; a++) free(*a);
	free(r->argv);
	free(r->env);
	free(r->workdir);
	free(r->user);
	free(r->path);
	char **ids[] = {&r->mac, &r->ip, &r->gateway, &r->hostname, &r->machine_id, &r->seed, &r->key_priv, &r->key_pub};
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) free(*ids[i]);
	memset(r, 0, sizeof *r);
	r->prefix_len = -1;
}

/* The string members of an identity request (identity.c validates their contents). */
static char **identity_member(struct request *r, const char *key) {
	return !strcmp(key, "mac") ? &r->mac : !strcmp(key, "ip") ? &r->ip : !strcmp(key, "gateway") ? &r->gateway : !strcmp(key, "hostname") ? &r->hostname
		: !strcmp(key, "machineId") ? &r->machine_id : !strcmp(key, "seed") ? &r->seed : !strcmp(key, "hostKey") ? &r->key_priv
		: !strcmp(key, "hostKeyPub") ? &r->key_pub : NULL;
}

/*
 * Parses a request object: {"op":S, "argv":[S...], "env":["K=V"...], "workdir":S, "user":S,
 * "path":S, "tty":B, "rows":N, "cols":N, "unixMs":N, and identity's "mac", "ip", "prefixLen",
 * "gateway", "hostname", "machineId", "seed", "hostKey", "hostKeyPub"}. Unknown members are skipped. Returns 0, or -1 with
 * *err naming the problem (the request is then freed).
 */
int req_parse(const char *json, size_t len, struct request *r, const char **err) {
	char *buf = malloc(len + 1);
	memset(r, 0, sizeof *r);
	r->prefix_len = -1;
	*err = "bad request: not a JSON object";
	if (!buf) return -1;
	memcpy(buf, json, len);
	buf[len] = 0;
	if (strlen(buf) != len) goto bad; /* NUL inside */
	const char *p = buf;
	skip_ws(&p);
	if (*p++ != '{') goto bad;
	skip_ws(&p);
	if (*p == '}') p++;
	else for (;;) {
		char key[32];
		skip_ws(&p);
		if (parse_string(&p, key, sizeof key)) goto bad;
		skip_ws(&p);
		if (*p++ != ':') goto bad;
		skip_ws(&p);
		char **sp = !strcmp(key, "workdir") ? &r->workdir : !strcmp(key, "user") ? &r->user : !strcmp(key, "path") ? &r->path : identity_member(r, key);
		if (!strcmp(key, "op")) {
			if (*p != '"' || parse_string(&p, r->op, sizeof r->op)) { *err = "bad request: \"op\" must be a string"; goto bad; }
		} else if (sp) {
			free(*sp);
			if (!(*sp = str_alloc(&p))) { *err = "bad request: a string member is invalid"; goto bad; }
		} else if (!strcmp(key, "argv") || !strcmp(key, "env")) {
			char ***ap = key[0] == 'a' ? &r->argv : &r->env;
			if (*ap || str_array(&p, ap)) { *err = "bad request: \"argv\"/\"env\" must be arrays of strings"; goto bad; }
		} else if (!strcmp(key, "tty")) {
			if (!strncmp(p, "true", 4)) { r->tty = 1; p += 4; }
			else if (!strncmp(p, "false", 5)) { r->tty = 0; p += 5; }
			else { *err = "bad request: \"tty\" must be a boolean"; goto bad; }
		} else if (!strcmp(key, "unixMs")) {
			char *end;
			errno = 0;
			long long v = strtoll(p, &end, 10);
			/* 2001-09-09 .. 2286-11-20: a wall clock, not a duration or garbage */
			if (end == p || errno || v < 1000000000000LL || v > 9999999999999LL || *end == '.' || *end == 'e' || *end == 'E') { *err = "bad request: \"unixMs\" must be milliseconds since the epoch (an integer)"; goto bad; }
			r->unix_ms = v;
			p = end;
		} else if (!strcmp(key, "prefixLen")) {
			char *end;
			long v = strtol(p, &end, 10);
			if (end == p || v < 0 || v > 32 || *end == '.' || *end == 'e' || *end == 'E') { *err = "bad request: \"prefixLen\" must be an integer 0..32"; goto bad; }
			r->prefix_len = (int)v;
			p = end;
		} else if (!strcmp(key, "rows") || !strcmp(key, "cols")) {
			char *end;
			long v = strtol(p, &end, 10);
			if (end == p || v < 0 || v > 65535) { *err = "bad request: \"rows\"/\"cols\" must be 0..65535"; goto bad; }
			*(key[0] == 'r' ? &r->rows : &r->cols) = (int)v;
			p = end;
		} else if (skip_value(&p)) {
			goto bad;
		}
		skip_ws(&p);
		if (*p == ',') { p++; continue; }
		if (*p++ != '}') goto bad;
		break;
	}
	skip_ws(&p);
	if (*p) goto bad;
	if (!r->op[0]) { *err = "bad request: missing \"op\""; goto bad; }
	free(buf);
	*err = NULL;
	return 0;
bad:
	free(buf);
	req_free(r);
	return -1;
}
