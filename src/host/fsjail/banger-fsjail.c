/*
 * banger-fsjail UID GID PROGRAM [ARG...]
 *
 * Runs PROGRAM (virtiofsd, for a read-write `--mount`) so that whatever the guest does through
 * it lands in HOSTDIR as the unprivileged host user UID:GID (the folder's owner), never as root,
 * and never as a setuid/setgid file or a device node:
 *
 *  1. a new user namespace in which uid 0 / gid 0 (and only those) map to UID / GID on the host.
 *     The process becomes that namespace's root: virtiofsd keeps working as it does as root
 *     (its own mount/pid/net sandbox, setfsuid to the guest's uid 0), but every file it creates
 *     is owned by UID:GID, it has no capability over files of other host users, and the kernel
 *     refuses device nodes (mknod of a char/block device needs CAP_MKNOD in the initial
 *     namespace). Guest uids other than 0 have no mapping: virtiofsd cannot act as them
 *     (creating a file as such a uid fails with EINVAL in the guest).
 *  2. no_new_privs and a seccomp filter (stacked under virtiofsd's own) that fails with EPERM
 *     any chmod/fchmod/fchmodat/fchmodat2, open/openat/creat that creates, mkdir/mkdirat and
 *     mknod/mknodat whose mode has S_ISUID or S_ISGID, and any mknod of a char/block device;
 *     openat2 (whose mode sits in a struct the filter cannot read) fails with ENOSYS so callers
 *     fall back to openat. Other architectures' syscall numbers (x32, i386) fail with EPERM.
 *
 * Needs root (it writes the new namespace's uid_map from a helper child in the initial
 * namespace). The mounts (read-only binds, the socket directory) are set up by the caller
 * before it execs us (src/vms/drivers/qemu/mounts.ts). x86_64 only, like banger.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif

static void die(const char *what) {
  fprintf(stderr, "banger-fsjail: %s: %s\n", what, strerror(errno));
  exit(125);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int e = errno;
  close(fd);
  errno = e;
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define RET_EPERM (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define RET_ENOSYS (SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA))

/* One guarded syscall: where its mode and (for open*) its flags are, and whether it makes nodes. */
struct guard {
  int nr;
  int mode_arg;
  int flags_arg; /* -1: always checked; else only when flags has O_CREAT or O_TMPFILE */
  int device;    /* 1: a char/block device type in mode is refused too */
};

static const struct guard guards[] = {
  {__NR_chmod, 1, -1, 0},   {__NR_fchmod, 1, -1, 0},     {__NR_fchmodat, 2, -1, 0},
  {__NR_fchmodat2, 2, -1, 0}, {__NR_creat, 1, -1, 0},    {__NR_open, 2, 1, 0},
  {__NR_openat, 3, 2, 0},   {__NR_mkdir, 1, -1, 0},      {__NR_mkdirat, 2, -1, 0},
  {__NR_mknod, 1, -1, 1},   {__NR_mknodat, 2, -1, 1},
};

static struct sock_filter prog[256];
static unsigned short len;

static void emit(struct sock_filter f) {
  if (len >= sizeof prog / sizeof prog[0]) {
    fprintf(stderr, "banger-fsjail: seccomp program too long\n");
    exit(125);
  }
  prog[len++] = f;
}

/*
 * The filter, block by block (each block's jumps stay inside it):
 *   arch != x86_64 → EPERM;  nr >= 0x40000000 (x32) → EPERM;  openat2 → ENOSYS;
 *   for each guard: nr matches → [flags lack O_CREAT|O_TMPFILE → allow] mode & 06000 → EPERM,
 *   [device: S_IFCHR/S_IFBLK → EPERM], else allow;  anything else → allow.
 */
static void build(void) {
  emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
  emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
  emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, RET_EPERM));
  emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
  emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1));
  emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, RET_EPERM));
  emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 0, 1));
  emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, RET_ENOSYS));
  for (size_t i = 0; i < sizeof guards / sizeof guards[0]; i++) {
    const struct guard *g = &guards[i];
    /* body length after the JEQ: [2 flags] + 2 mode + [3 device] + allow + deny */
    unsigned char body = (g->flags_arg >= 0 ? 2 : 0) + 2 + (g->device ? 3 : 0) + 2;
    unsigned short at = len;
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)g->nr, 0, body));
    unsigned short allow = at + 2 + body - 2; /* index of the allow RET */
    unsigned short deny = allow + 1;
    if (g->flags_arg >= 0) {
      emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(g->flags_arg)));
      emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_CREAT | __O_TMPFILE, 0, (unsigned char)(allow - len - 1)));
    }
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(g->mode_arg)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, (unsigned char)(deny - len - 1), 0));
    if (g->device) {
      emit((struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0170000));
      emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0020000, (unsigned char)(deny - len - 1), 0));
      emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0060000, (unsigned char)(deny - len - 1), 0));
    }
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, RET_EPERM));
    if (len != deny + 1) {
      fprintf(stderr, "banger-fsjail: internal error building the filter\n");
      exit(125);
    }
  }
  emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

static unsigned long parse_id(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || !*s || *end || v == 0 || v >= 4294967295UL) {
    fprintf(stderr, "banger-fsjail: %s '%s' must be a host id other than 0\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: banger-fsjail UID GID PROGRAM [ARG...]\n");
    return 2;
  }
  unsigned long uid = parse_id(argv[1], "UID"), gid = parse_id(argv[2], "GID");
  if (geteuid() != 0) {
    fprintf(stderr, "banger-fsjail: must run as root (it maps a user namespace)\n");
    return 125;
  }
  build();

  /* A child in the initial namespace writes our maps once we are in the new one; we keep our
   * pid (the caller records it), so the program we exec is the process it will signal. */
  int ready[2], done[2];
  if (pipe2(ready, O_CLOEXEC) || pipe2(done, O_CLOEXEC)) die("pipe");
  pid_t me = getpid();
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    char c, path[64], map[64];
    close(ready[1]);
    close(done[0]);
    if (read(ready[0], &c, 1) != 1) _exit(1);
    snprintf(map, sizeof map, "0 %lu 1\n", uid);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)me);
    if (write_file(path, map)) die("write uid_map");
    snprintf(map, sizeof map, "0 %lu 1\n", gid);
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)me);
    if (write_file(path, map)) die("write gid_map");
    if (write(done[1], "k", 1) != 1) _exit(1);
    _exit(0);
  }
  close(ready[0]);
  close(done[1]);
  if (unshare(CLONE_NEWUSER)) die("unshare(CLONE_NEWUSER)");
  if (write(ready[1], "k", 1) != 1) die("signal the map writer");
  char c;
  int ok = read(done[0], &c, 1) == 1;
  int status = 0;
  waitpid(child, &status, 0);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status)) {
    fprintf(stderr, "banger-fsjail: the user namespace map was not written\n");
    return 125;
  }
  /* Become the namespace's root (host UID:GID) with no supplementary groups. */
  if (setgroups(0, NULL)) die("setgroups");
  if (setresgid(0, 0, 0)) die("setresgid");
  if (setresuid(0, 0, 0)) die("setresuid");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("no_new_privs");
  struct sock_fprog fprog = {.len = len, .filter = prog};
  if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog)) die("seccomp");
  execvp(argv[3], argv + 3);
  die(argv[3]);
}
