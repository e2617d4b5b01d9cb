/* The benchmark's floor: a minimal supervisor with no features, written for
 * scripts/bench/bench.py so every figure of a real supervisor can be read as a ratio to what
 * this machine allows.
 *
 * It does the same work as the tools it is compared with and nothing else: one process,
 * one thread, one poll(2) loop; it spawns every child of its config in a process group of
 * its own with stdout and stderr on one pipe, copies each line of that pipe to its own
 * stdout with a "[name] " prefix (one writev per read: prefix and line slices, each byte
 * touched once), respawns a child at once when it exits, and on SIGTERM/SIGINT sends SIGTERM
 * to every group and exits when the last child is reaped. No readiness checks, no restart
 * budget, no state, no API.
 *
 *   floor CONFIG      CONFIG: one child per line, "name port argv0 argv1 ..." (spaces
 *                     separate words; PORT=<port> is put in the child's environment)
 *
 * Built by scripts/bench.sh with `cc -O2`. Linux only (signalfd).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXCHILD 1024
#define MAXARGS 64
#define BUFSZ (64 * 1024)
#define MAXIOV 1024

struct child {
    char name[64];
    char prefix[68];
    size_t prefix_len;
    char *argv[MAXARGS];
    char port_env[32];
    pid_t pid;    /* 0: not running */
    int fd;       /* read end of its output pipe, -1 when closed */
    char *buf;    /* allocated on the first read: an idle child costs no buffer */
    size_t held;  /* bytes of an unfinished line at the start of buf */
};

static struct child kids[MAXCHILD];
static int nkids;
static int stopping;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void spawn(struct child *c) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe2");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(p[1], 1);
        dup2(p[1], 2);
        putenv(c->port_env);
        execv(c->argv[0], c->argv);
        _exit(127);
    }
    setpgid(pid, pid);
    close(p[1]);
    if (c->fd >= 0) close(c->fd);
    c->fd = p[0];
    c->held = 0;
    c->pid = pid;
}

/* Writes everything of iov[0..n) to stdout (the sink), retrying short writes. */
static void write_all(struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(1, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("writev");
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= w;
        }
    }
}

/* Reads what the pipe has and writes every complete line, prefixed. At EOF a partial last
 * line is written with a newline. Returns 0 at EOF. */
static int pump(struct child *c) {
    if (!c->buf && !(c->buf = malloc(BUFSZ))) die("malloc");
    ssize_t r = read(c->fd, c->buf + c->held, BUFSZ - c->held);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    int eof = r <= 0;
    size_t have = c->held + (r > 0 ? r : 0);
    static struct iovec iov[MAXIOV];
    static char nl = '\n';
    int n = 0;
    size_t start = 0;
    for (;;) {
        char *e = memchr(c->buf + start, '\n', have - start);
        size_t end;
        if (e) {
            end = e - c->buf + 1;
        } else if (have - start > 0 && (eof || (start == 0 && have == BUFSZ))) {
            end = have; /* a final unterminated line, or one longer than the buffer */
        } else {
            break;
        }
        iov[n++] = (struct iovec){c->prefix, c->prefix_len};
        iov[n++] = (struct iovec){c->buf + start, end - start};
        if (!e) iov[n++] = (struct iovec){&nl, 1};
        start = end;
        if (n > MAXIOV - 3) {
            write_all(iov, n);
            n = 0;
        }
    }
    if (n) write_all(iov, n);
    c->held = have - start;
    if (c->held && start) memmove(c->buf, c->buf + start, c->held);
    return !eof;
}

static void load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0 && nkids < MAXCHILD) {
        struct child *c = &kids[nkids];
        char *save, *w = strtok_r(line, " \t\n", &save);
        if (!w) continue;
        snprintf(c->name, sizeof c->name, "%s", w);
        c->prefix_len = (size_t)snprintf(c->prefix, sizeof c->prefix, "[%.60s] ", w);
        w = strtok_r(NULL, " \t\n", &save);
        snprintf(c->port_env, sizeof c->port_env, "PORT=%s", w ? w : "0");
        int a = 0;
        while ((w = strtok_r(NULL, " \t\n", &save)) && a < MAXARGS - 1) c->argv[a++] = strdup(w);
        c->argv[a] = NULL;
        if (!a) continue;
        c->fd = -1;
        nkids++;
    }
    free(line);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: floor CONFIG\n");
        return 2;
    }
    load(argv[1]);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) die("signalfd");
    for (int i = 0; i < nkids; i++) spawn(&kids[i]);

    static struct pollfd pfd[MAXCHILD + 1];
    static int who[MAXCHILD + 1];
    for (;;) {
        int n = 0, live = 0;
        pfd[n++] = (struct pollfd){sfd, POLLIN, 0};
        for (int i = 0; i < nkids; i++) {
            live += kids[i].pid != 0;
            if (kids[i].fd >= 0) {
                who[n] = i;
                pfd[n++] = (struct pollfd){kids[i].fd, POLLIN, 0};
            }
        }
        if (stopping && !live) return 0;
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        for (int k = 1; k < n; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            struct child *c = &kids[who[k]];
            if (!pump(c)) {
                close(c->fd);
                c->fd = -1;
            }
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                    stopping = 1;
                    for (int i = 0; i < nkids; i++)
                        if (kids[i].pid) kill(-kids[i].pid, SIGTERM);
                }
            }
            pid_t pid;
            int status;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                for (int i = 0; i < nkids; i++) {
                    if (kids[i].pid != pid) continue;
                    kids[i].pid = 0;
                    if (!stopping) spawn(&kids[i]); /* the old pipe's tail is dropped */
                }
            }
        }
    }
}
