/*
 * set-clock: the host gives the guest its wall clock (protocol v2 request
 * {"op":"set-clock","unixMs":N}, answered {"ok":true,"stepMs":D} where D is how far the clock
 * moved). Only the host reaches the agent (the virtio-serial port has a single host client;
 * vsock accepts CID 2 only), so only the host can set the clock this way.
 *
 * Under QEMU TCG a guest's clock falls behind (lost ticks, a clock read from the RTC with
 * one-second resolution), and tools such as tar then see host files "from the future".
 * bangerd sends set-clock when it opens a VM's agent connection and again on later contact.
 *
 * On test channels (--unix, --stdio, --channel) the agent runs on a host: it never touches
 * the system clock there. With --fake-clock FILE it writes the time it would set into FILE
 * (decimal milliseconds and a newline) instead, so tests can check the request end to end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "agent.h"

int clock_mode = CLOCK_SYSTEM;
const char *clock_file = NULL;

static long long realtime_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int clock_apply(long long unix_ms, long long *step_ms, char *err, size_t cap) {
	long long before = realtime_ms();
	if (clock_mode == CLOCK_REFUSE) {
		snprintf(err, cap, "refused on a test channel (the agent is not in a guest; see --fake-clock)");
		return -1;
	}
	if (clock_mode == CLOCK_FILE) {
		char tmp[4200];
		snprintf(tmp, sizeof tmp, "%s.tmp", clock_file);
		FILE *f = fopen(tmp, "w");
		if (!f || fprintf(f, "%lld\n", unix_ms) < 0 || fclose(f) != 0 || rename(tmp, clock_file) != 0) {
			snprintf(err, cap, "%s: %s", clock_file, strerror(errno));
			return -1;
		}
	} else {
		struct timespec ts = {.tv_sec = (time_t)(unix_ms / 1000), .tv_nsec = (long)(unix_ms % 1000) * 1000000L};
		if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
			snprintf(err, cap, "%s", strerror(errno));
			return -1;
		}
	}
	*step_ms = unix_ms - before;
	return 0;
}

void op_set_clock(struct out *o, long long unix_ms) {
	if (unix_ms <= 0) {
		out_str(o, "{\"ok\":false,\"error\":\"set-clock: \\\"unixMs\\\" is required\"}");
		return;
	}
	char err[4400], msg[4500];
	long long step;
	if (clock_apply(unix_ms, &step, err, sizeof err) != 0) {
		snprintf(msg, sizeof msg, "set-clock: %s", err);
		out_str(o, "{\"ok\":false,\"error\":");
		out_json_string(o, msg);
		out_str(o, "}");
		return;
	}
	out_fmt(o, "{\"ok\":true,\"stepMs\":%lld}", step);
}
