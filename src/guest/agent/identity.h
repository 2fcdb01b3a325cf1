/*
 * Shared by identity.c (validation, files, RNG, sshd) and identity-net.c (eth0's MAC, address,
 * default route, gratuitous ARP).
 */
#ifndef BANGER_IDENTITY_H
#define BANGER_IDENTITY_H
#include <netinet/in.h>
#include <stddef.h>

#define IFACE "eth0"

/* A validated identity request (identity.c validate()). */
struct ident {
	unsigned char mac[6];
	struct in_addr ip, gw;
	int prefix;
	const char *hostname, *machine_id, *key_priv, *key_pub;
	unsigned char seed[512];
	size_t seed_len;
	long long unix_ms;
};

/* Applies the network part; on failure *step names the part ("mac", "address", "route", "arp"). */
int identity_network(const struct ident *id, const char **step, char *err, size_t cap);
#endif
