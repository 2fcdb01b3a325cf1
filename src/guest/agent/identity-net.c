/*
 * identity, the network part (see identity.c): eth0's MAC (SIOCSIFHWADDR), its IPv4 addresses
 * and the default route (rtnetlink), and a gratuitous ARP (AF_PACKET). Syscalls only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"
#include "identity.h"

/* ---- network ----------------------------------------------------------------------------- */

static int if_flags(int s, short *flags) {
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, IFNAMSIZ, IFACE);
	if (ioctl(s, SIOCGIFFLAGS, &ifr)) return -1;
	*flags = ifr.ifr_flags;
	return 0;
}

static int if_set_flags(int s, short flags) {
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, IFNAMSIZ, IFACE);
	ifr.ifr_flags = flags;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static int set_mac(const struct ident *id, char *err, size_t cap) {
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};
	short flags = 0;
	int rc = -1;
	if (s < 0) goto fail;
	snprintf(ifr.ifr_name, IFNAMSIZ, IFACE);
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	memcpy(ifr.ifr_hwaddr.sa_data, id->mac, 6);
	if (ioctl(s, SIOCSIFHWADDR, &ifr) == 0) rc = 0;
	else if (errno == EBUSY && if_flags(s, &flags) == 0) { /* the driver cannot change it while up */
		if (if_set_flags(s, flags & ~IFF_UP)) goto fail;
		int set = ioctl(s, SIOCSIFHWADDR, &ifr), saved = errno;
		if (if_set_flags(s, flags | IFF_UP)) goto fail;
		errno = saved;
		if (set == 0) rc = 0;
	}
	if (rc == 0 && if_flags(s, &flags) == 0 && !(flags & IFF_UP) && if_set_flags(s, flags | IFF_UP)) rc = -1;
fail:
	if (rc) snprintf(err, cap, IFACE ": %s", strerror(errno));
	if (s >= 0) close(s);
	return rc;
}

struct nlbuf {
	struct nlmsghdr h;
	union {
		struct ifaddrmsg a;
		struct rtmsg r;
	} u;
	char attrs[128];
};

static void nl_attr(struct nlbuf *b, int type, const void *data, size_t len) {
	struct rtattr *a = (struct rtattr *)((char *)b + NLMSG_ALIGN(b->h.nlmsg_len));
	a->rta_type = (unsigned short)type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	b->h.nlmsg_len = NLMSG_ALIGN(b->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends one request with NLM_F_ACK and returns 0 or the kernel's -errno. */
static int nl_call(int fd, struct nlbuf *b) {
	static unsigned seq;
	char buf[8192];
	b->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	b->h.nlmsg_seq = ++seq;
	if (send(fd, b, b->h.nlmsg_len, 0) < 0) return -errno;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) return errno == EINTR ? -EINTR : -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
			return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
		}
	}
}

/* eth0's IPv4 addresses (at most max), from an RTM_GETADDR dump. */
static int list_addrs(int fd, int ifindex, struct in_addr *addrs, unsigned char *prefixes, int max) {
	struct nlbuf b = {0};
	char buf[16384];
	int count = 0;
	b.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	b.h.nlmsg_type = RTM_GETADDR;
	b.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	b.h.nlmsg_seq = 0x1d;
	b.u.a.ifa_family = AF_INET;
	if (send(fd, &b, b.h.nlmsg_len, 0) < 0) return -1;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n <= 0) return -1;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) return count;
			if (h->nlmsg_type == NLMSG_ERROR) return -1;
			if (h->nlmsg_type != RTM_NEWADDR) continue;
			struct ifaddrmsg *a = NLMSG_DATA(h);
			if ((int)a->ifa_index != ifindex || count >= max) continue;
			int alen = (int)IFA_PAYLOAD(h);
			for (struct rtattr *rt = IFA_RTA(a); RTA_OK(rt, alen); rt = RTA_NEXT(rt, alen)) {
				if (rt->rta_type == IFA_LOCAL && RTA_PAYLOAD(rt) == 4) {
					memcpy(&addrs[count], RTA_DATA(rt), 4);
					prefixes[count++] = a->ifa_prefixlen;
					break;
				}
			}
		}
	}
}

static void addr_msg(struct nlbuf *b, int type, int flags, int ifindex, struct in_addr a, int prefix) {
	memset(b, 0, sizeof *b);
	b->h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	b->h.nlmsg_type = (unsigned short)type;
	b->h.nlmsg_flags = (unsigned short)flags;
	b->u.a.ifa_family = AF_INET;
	b->u.a.ifa_prefixlen = (unsigned char)prefix;
	b->u.a.ifa_index = (unsigned)ifindex;
	b->u.a.ifa_scope = RT_SCOPE_UNIVERSE;
	nl_attr(b, IFA_LOCAL, &a, 4);
	nl_attr(b, IFA_ADDRESS, &a, 4);
}

/* Removes every other IPv4 address of eth0, then adds IP/PREFIX (with its broadcast). */
static int set_address(int fd, int ifindex, const struct ident *id, char *err, size_t cap) {
	struct in_addr addrs[16];
	unsigned char prefixes[16];
	struct nlbuf b;
	int n = list_addrs(fd, ifindex, addrs, prefixes, 16);
	if (n < 0) {
		snprintf(err, cap, "listing " IFACE "'s addresses: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (addrs[i].s_addr == id->ip.s_addr && prefixes[i] == id->prefix) continue;
		addr_msg(&b, RTM_DELADDR, 0, ifindex, addrs[i], prefixes[i]);
		int rc = nl_call(fd, &b);
		if (rc && rc != -EADDRNOTAVAIL && rc != -ENOENT) { /* gone with its primary: fine */
			snprintf(err, cap, "removing %s/%d: %s", inet_ntoa(addrs[i]), prefixes[i], strerror(-rc));
			return -1;
		}
	}
	addr_msg(&b, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, ifindex, id->ip, id->prefix);
	struct in_addr brd = {.s_addr = id->ip.s_addr | htonl(~(~0u << (32 - id->prefix)))};
	nl_attr(&b, IFA_BROADCAST, &brd, 4);
	int rc = nl_call(fd, &b);
	if (rc) {
		snprintf(err, cap, "adding %s/%d: %s", inet_ntoa(id->ip), id->prefix, strerror(-rc));
		return -1;
	}
	return 0;
}

static int set_route(int fd, int ifindex, const struct ident *id, char *err, size_t cap) {
	struct nlbuf b = {0};
	b.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	b.h.nlmsg_type = RTM_NEWROUTE;
	b.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	b.u.r.rtm_family = AF_INET;
	b.u.r.rtm_table = RT_TABLE_MAIN;
	b.u.r.rtm_protocol = RTPROT_BOOT;
	b.u.r.rtm_scope = RT_SCOPE_UNIVERSE;
	b.u.r.rtm_type = RTN_UNICAST;
	nl_attr(&b, RTA_GATEWAY, &id->gw, 4);
	nl_attr(&b, RTA_OIF, &ifindex, 4);
	int rc = nl_call(fd, &b);
	if (rc) snprintf(err, cap, "default via %s: %s", inet_ntoa(id->gw), strerror(-rc));
	return rc ? -1 : 0;
}

/* Waits (at most ~2 s) for eth0 to report a carrier after a down/up. */
static void wait_running(void) {
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	short flags = 0;
	for (int i = 0; s >= 0 && i < 40; i++) {
		if (if_flags(s, &flags) || (flags & IFF_RUNNING)) break;
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (s >= 0) close(s);
}

/* A gratuitous ARP request (sender = target = IP, from the new MAC), sent twice. */
static int send_garp(int ifindex, const struct ident *id, char *err, size_t cap) {
	int s = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
	if (s < 0) {
		snprintf(err, cap, "AF_PACKET socket: %s", strerror(errno));
		return -1;
	}
	unsigned char pkt[28] = {0, 1, 8, 0, 6, 4, 0, 1};
	memcpy(pkt + 8, id->mac, 6);
	memcpy(pkt + 14, &id->ip, 4);
	memcpy(pkt + 24, &id->ip, 4);
	struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP), .sll_ifindex = ifindex, .sll_halen = 6};
	memset(to.sll_addr, 0xff, 6);
	int rc = 0;
	for (int i = 0; i < 2 && rc == 0; i++)
		if (sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) != sizeof pkt) rc = -1;
	if (rc) snprintf(err, cap, "sendto: %s", strerror(errno));
	close(s);
	return rc;
}

int identity_network(const struct ident *id, const char **step, char *err, size_t cap) {
	int ifindex = (int)if_nametoindex(IFACE);
	if (!ifindex) {
		*step = "mac";
		snprintf(err, cap, IFACE ": %s", strerror(errno));
		return -1;
	}
	*step = "mac";
	if (set_mac(id, err, cap)) return -1;
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct timeval tv = {.tv_sec = 2};
	*step = "address";
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) {
		snprintf(err, cap, "netlink: %s", strerror(errno));
		if (fd >= 0) close(fd);
		return -1;
	}
	int rc = set_address(fd, ifindex, id, err, cap);
	if (!rc) {
		*step = "route";
		rc = set_route(fd, ifindex, id, err, cap);
	}
	close(fd);
	if (rc) return -1;
	wait_running();
	*step = "arp";
	return send_garp(ifindex, id, err, cap);
}

