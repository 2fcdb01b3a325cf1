/*
 * identity (agent version 4): the host gives a guest restored from a memory snapshot its own
 * identity. A restored guest still has the snapshot's MAC, IP, hostname, machine-id, RNG state,
 * clock and SSH host key; this request replaces all of them, in this order:
 *
 *   seed      the host's random bytes mixed into the kernel pool (RNDADDENTROPY, RNDRESEEDCRNG)
 *   clock     the wall clock, as set-clock (clock.c)
 *   hostname  sethostname(2), /etc/hostname, and the "# banger" line of /etc/hosts
 *   machine-id  /etc/machine-id
 *   ssh-keys  /etc/ssh/ssh_host_ed25519_key (0600) and .pub (0644)
 *   sshd      SIGHUP to every listening sshd (it re-executes itself and reloads its host keys)
 *   mac       eth0's MAC (SIOCSIFHWADDR; the link goes down and up when the driver needs it)
 *   address   eth0's IPv4 addresses replaced by IP/PREFIX (rtnetlink)
 *   route     the default route via GATEWAY on eth0 (rtnetlink, replace)
 *   arp       gratuitous ARP for IP from the new MAC (AF_PACKET), so neighbours learn it
 *
 * Syscalls only: the image may have no iproute2, no kmod, no hostname(1). Request:
 *   {"op":"identity","mac":"02:..","ip":"A.B.C.D","prefixLen":N,"gateway":"A.B.C.D",
 *    "hostname":S,"machineId":32 hex,"seed":hex (32..512 bytes),"hostKey":PEM,
 *    "hostKeyPub":"ssh-ed25519 …","unixMs":N}
 * Reply: {"ok":true,"clockStepMs":D,"sshd":N (listeners signalled)} or
 *        {"ok":false,"step":"<step>","error":"…"}.
 * Every field is validated before anything changes (step "validate"); a later step that fails
 * stops the sequence and names itself. Only the host reaches the agent (see clock.c), but the
 * input is still checked: lengths, character sets, address arithmetic.
 *
 * On test channels (--unix, --stdio, --channel) the agent runs on a host: the request is
 * validated and then refused, never touching the host.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if_arp.h>
#include <linux/if_ether.h>
#include <netpacket/packet.h>
#include <linux/random.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"
#include "identity.h"


/* ---- validation --------------------------------------------------------------------- */

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

static const char *parse_mac(const char *s, unsigned char *m) {
	if (!s) return "\"mac\" is required";
	if (strlen(s) != 17) return "\"mac\" must be six hex octets separated by ':'";
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':')) return "\"mac\" must be six hex octets separated by ':'";
		m[i] = (unsigned char)(hi * 16 + lo);
	}
	if (m[0] & 1) return "\"mac\" must be a unicast address";
	if (!(m[0] | m[1] | m[2] | m[3] | m[4] | m[5])) return "\"mac\" must not be all zeros";
	return NULL;
}

static const char *parse_ip(const char *s, struct in_addr *a, const char *what) {
	static char msg[64];
	snprintf(msg, sizeof msg, "\"%s\" must be a dotted IPv4 address", what);
	if (!s || strlen(s) > 15 || inet_pton(AF_INET, s, a) != 1) return msg;
	return NULL;
}

/* RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], no label starting or ending with '-'. */
static const char *check_hostname(const char *s) {
	if (!s || !*s) return "\"hostname\" is required";
	size_t n = strlen(s);
	if (n > 63) return "\"hostname\" is longer than 63 characters";
	size_t label = 0;
	for (size_t i = 0; i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == 0) {
			if (label == 0 || s[i - 1] == '-') return "\"hostname\" has an empty label or one ending in '-'";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c == '-' && label > 0)))
			return "\"hostname\" may hold only letters, digits, '-' and '.'";
		label++;
	}
	return NULL;
}

static const char *check_machine_id(const char *s) {
	if (!s || strlen(s) != 32) return "\"machineId\" must be 32 lowercase hex digits";
	int nonzero = 0;
	for (int i = 0; i < 32; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return "\"machineId\" must be 32 lowercase hex digits";
		nonzero |= s[i] != '0';
	}
	return nonzero ? NULL : "\"machineId\" must not be all zeros";
}

static const char *check_key(const char *priv, const char *pub) {
	static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n", end[] = "-----END OPENSSH PRIVATE KEY-----\n";
	if (!priv || strlen(priv) > 8192 || strncmp(priv, begin, sizeof begin - 1)) return "\"hostKey\" must be an OpenSSH private key (PEM armour, at most 8 KiB)";
	size_t n = strlen(priv);
	if (n < sizeof begin + sizeof end || strcmp(priv + n - (sizeof end - 1), end)) return "\"hostKey\" must end with the OpenSSH END line and a newline";
	for (const char *p = priv + sizeof begin - 1; p < priv + n - (sizeof end - 1); p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '/' || *p == '=' || *p == '\n'))
			return "\"hostKey\" holds characters outside base64";
	if (!pub || strlen(pub) > 1024 || strncmp(pub, "ssh-ed25519 ", 12)) return "\"hostKeyPub\" must be an ssh-ed25519 public key line (at most 1 KiB)";
	const char *p = pub + 12;
	size_t b64 = 0;
	for (; *p && *p != ' '; p++, b64++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '/' || *p == '='))
			return "\"hostKeyPub\" has a key that is not base64";
	if (b64 < 16) return "\"hostKeyPub\" has no key";
	for (; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) return "\"hostKeyPub\" holds a control character";
	return NULL;
}

static const char *validate(const struct request *r, struct ident *id) {
	const char *e;
	memset(id, 0, sizeof *id);
	if ((e = parse_mac(r->mac, id->mac))) return e;
	if ((e = parse_ip(r->ip, &id->ip, "ip")) || (e = parse_ip(r->gateway, &id->gw, "gateway"))) return e;
	if (r->prefix_len < 8 || r->prefix_len > 30) return "\"prefixLen\" must be 8..30";
	id->prefix = r->prefix_len;
	uint32_t mask = htonl(~0u << (32 - id->prefix)), ip = id->ip.s_addr, gw = id->gw.s_addr;
	if ((ip & mask) != (gw & mask)) return "\"gateway\" is not inside ip/prefixLen";
	if (ip == gw) return "\"ip\" and \"gateway\" are the same address";
	if ((ip & ~mask) == 0 || (ip & ~mask) == ~mask) return "\"ip\" is the network or broadcast address of its prefix";
	if ((e = check_hostname(r->hostname)) || (e = check_machine_id(r->machine_id)) || (e = check_key(r->key_priv, r->key_pub))) return e;
	if (!r->seed || strlen(r->seed) % 2 || strlen(r->seed) < 64 || strlen(r->seed) > 1024) return "\"seed\" must be 32..512 bytes in hex";
	for (size_t i = 0; r->seed[2 * i]; i++) {
		int hi = hexval(r->seed[2 * i]), lo = hexval(r->seed[2 * i + 1]);
		if (hi < 0 || lo < 0) return "\"seed\" must be 32..512 bytes in hex";
		id->seed[id->seed_len++] = (unsigned char)(hi * 16 + lo);
	}
	if (r->unix_ms <= 0) return "\"unixMs\" is required";
	id->unix_ms = r->unix_ms;
	id->hostname = r->hostname;
	id->machine_id = r->machine_id;
	id->key_priv = r->key_priv;
	id->key_pub = r->key_pub;
	return NULL;
}

/* ---- files --------------------------------------------------------------------------- */

/* Writes path atomically (temp file beside it, fsync, rename), owned by root with mode. When
 * the rename is refused because path is a mount point (a bind-mounted /etc/machine-id), the
 * file is rewritten in place instead. */
static int write_file(const char *path, const char *data, size_t len, mode_t mode, char *err, size_t cap) {
	char tmp[256];
	snprintf(tmp, sizeof tmp, "%s.banger-tmp", path);
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) goto fail;
	if (write(fd, data, len) != (ssize_t)len || fchmod(fd, mode) || fchown(fd, 0, 0) || fsync(fd)) {
		close(fd);
		unlink(tmp);
		goto fail;
	}
	close(fd);
	if (rename(tmp, path) == 0) return 0;
	int saved = errno;
	unlink(tmp);
	errno = saved;
	if (errno != EBUSY) goto fail;
	fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) goto fail;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		goto fail;
	}
	close(fd);
	return 0;
fail:
	snprintf(err, cap, "%s: %s", path, strerror(errno));
	return -1;
}

/* /etc/hosts: the line marked "# banger" (written by banger-first-boot) names the new IP and host. */
static int update_hosts(const struct ident *id, char *err, size_t cap) {
	static char in[65536];
	struct out o = {0};
	int fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	if (fd >= 0) {
		ssize_t r;
		while (n < sizeof in - 1 && (r = read(fd, in + n, sizeof in - 1 - n)) > 0) n += (size_t)r;
		close(fd);
	}
	if (n >= sizeof in - 1) {
		snprintf(err, cap, "/etc/hosts is larger than 64 KiB");
		return -1;
	}
	in[n] = 0;
	for (char *line = in, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next) *next++ = 0;
		size_t l = strlen(line);
		if (l >= 9 && !strcmp(line + l - 9, " # banger")) continue;
		out_str(&o, line);
		out_str(&o, "\n");
	}
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &id->ip, ip, sizeof ip);
	out_fmt(&o, "%s %s # banger\n", ip, id->hostname);
	int rc = o.p ? write_file("/etc/hosts", o.p, o.len, 0644, err, cap) : -1;
	if (!o.p) snprintf(err, cap, "out of memory");
	free(o.p);
	return rc;
}

/* ---- rng, hostname, sshd -------------------------------------------------------------- */

static int add_seed(const struct ident *id, char *err, size_t cap) {
	struct {
		int entropy_count, buf_size;
		unsigned char buf[512];
	} pool;
	pool.entropy_count = (int)id->seed_len * 8;
	pool.buf_size = (int)id->seed_len;
	memcpy(pool.buf, id->seed, id->seed_len);
	int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &pool) != 0) {
		snprintf(err, cap, "RNDADDENTROPY: %s", strerror(errno));
		if (fd >= 0) close(fd);
		return -1;
	}
#ifdef RNDRESEEDCRNG
	ioctl(fd, RNDRESEEDCRNG); /* older kernels lack it; the new entropy then reaches the CRNG at its next reseed */
#endif
	close(fd);
	memset(&pool, 0, sizeof pool);
	return 0;
}

static int read_small(const char *path, char *buf, size_t cap) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0) return -1;
	buf[n] = 0;
	return (int)n;
}

/* The parent pid from /proc/PID/stat (the comm field may hold spaces and parentheses). */
static long parent_of(long pid) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if (read_small(path, buf, sizeof buf) <= 0) return -1;
	char *close_paren = strrchr(buf, ')');
	long ppid;
	char state;
	if (!close_paren || sscanf(close_paren + 1, " %c %ld", &state, &ppid) != 2) return -1;
	return ppid;
}

static int is_sshd(long pid) {
	char path[64], comm[64];
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	if (read_small(path, comm, sizeof comm) <= 0) return 0;
	return !strcmp(comm, "sshd\n");
}

/* SIGHUP to every sshd whose parent is not an sshd: the listeners (sessions are children of
 * one; OpenSSH 9.8+ names them sshd-session). Returns how many were signalled. */
static int reload_sshd(void) {
	DIR *d = opendir("/proc");
	int count = 0;
	if (!d) return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 1 || !is_sshd(pid)) continue;
		long ppid = parent_of(pid);
		if (ppid < 0 || is_sshd(ppid)) continue;
		if (kill((pid_t)pid, SIGHUP) == 0) count++;
	}
	closedir(d);
	return count;
}

/* ---- the op ------------------------------------------------------------------------------ */

static void fail_reply(struct out *o, const char *step, const char *msg) {
	out_str(o, "{\"ok\":false,\"step\":");
	out_json_string(o, step);
	out_str(o, ",\"error\":");
	char full[700];
	snprintf(full, sizeof full, "identity: %s: %s", step, msg);
	out_json_string(o, full);
	out_str(o, "}");
}

void op_identity(struct out *o, const struct request *r) {
	struct ident id;
	char err[600];
	const char *e = validate(r, &id), *step;
	if (e) return fail_reply(o, "validate", e);
	if (clock_mode != CLOCK_SYSTEM) return fail_reply(o, "validate", "refused on a test channel (the agent is not in a guest)");
	long long step_ms = 0;
	int sshd = 0;
	size_t klen = strlen(id.key_priv);
	char pub[1100], hostname_line[80], mid[40];
	snprintf(pub, sizeof pub, "%s\n", id.key_pub);
	snprintf(hostname_line, sizeof hostname_line, "%s\n", id.hostname);
	snprintf(mid, sizeof mid, "%s\n", id.machine_id);
	if (add_seed(&id, err, sizeof err)) step = "seed";
	else if (clock_apply(id.unix_ms, &step_ms, err, sizeof err)) step = "clock";
	else if (sethostname(id.hostname, strlen(id.hostname)) ? (snprintf(err, sizeof err, "sethostname: %s", strerror(errno)), 1) : 0) step = "hostname";
	else if (write_file("/etc/hostname", hostname_line, strlen(hostname_line), 0644, err, sizeof err)) step = "hostname";
	else if (update_hosts(&id, err, sizeof err)) step = "hosts";
	else if (write_file("/etc/machine-id", mid, strlen(mid), 0444, err, sizeof err)) step = "machine-id";
	else if (mkdir("/etc/ssh", 0755) && errno != EEXIST ? (snprintf(err, sizeof err, "/etc/ssh: %s", strerror(errno)), 1) : 0) step = "ssh-keys";
	else if (write_file("/etc/ssh/ssh_host_ed25519_key", id.key_priv, klen, 0600, err, sizeof err)) step = "ssh-keys";
	else if (write_file("/etc/ssh/ssh_host_ed25519_key.pub", pub, strlen(pub), 0644, err, sizeof err)) step = "ssh-keys";
	else if ((sshd = reload_sshd(), 0)) step = "sshd";
	else if (identity_network(&id, &step, err, sizeof err)) { /* step set by set_network */ }
	else step = NULL;
	memset(id.seed, 0, sizeof id.seed);
	if (step) {
		logmsg("identity: %s failed: %s", step, err);
		return fail_reply(o, step, err);
	}
	logmsg("identity applied (clock stepped %lld ms, %d sshd listener(s) reloaded)", step_ms, sshd);
	out_fmt(o, "{\"ok\":true,\"clockStepMs\":%lld,\"sshd\":%d}", step_ms, sshd);
}
