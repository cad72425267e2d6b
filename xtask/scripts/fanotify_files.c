// The /tmp files workload of `cargo xtask bench --workloads files` (100,000
// small files created, written, closed) under fanotify, to compare with
// Shrike's in-kernel prefix filter (BENCHMARKS.md, "File integrity").
//
//   gcc -O2 -pthread -o /tmp/fanotify_files xtask/scripts/fanotify_files.c
//   sudo /tmp/fanotify_files ROUNDS N [none | DIR [MODES]]
//
// DIR (default /tmp): the workload's files go into a fresh folder in it.
// MODES: comma-separated, of none, fs, dirs, dirs+w (default none,fs,dirs);
// `none` alone as the third argument is the workload without fanotify (to
// time it with and without an agent running).
//
// Modes, alternated each round:
//   none: no fanotify;
//   fs:   one FAN_MARK_FILESYSTEM mark on / (the only recursive fanotify
//         watch: /tmp is on the same file system here), FAN_REPORT_DFID_NAME,
//         create/delete/move/modify/attrib, a thread draining the queue (what
//         an agent would do before filtering the names);
//   dirs: FAN_MARK_ADD marks on every directory under the default watched
//         paths (FAN_EVENT_ON_CHILD; not recursive by itself: each
//         directory is one mark), the same drain thread;
//   dirs+w: dirs, and the workload's own folder marked too (a watched-path
//         workload: every file is an event).
// Each line: files/s (wall clock, noisy on a shared machine), and the CPU
// time per file of the thread making the files (its syscalls and what the
// kernel does for fanotify in them) and of the drain thread (what an agent
// spends reading the events, before any filtering or path building).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static long events, overflows, marks;
static double drain_cpu;

static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *drain(void *arg) {
    int fd = *(int *)arg;
    char buf[65536];
    double c0 = thread_cpu();
    while (!stop) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            // Wait for events (idle polling would add its own CPU).
            if (errno == EAGAIN) { struct pollfd p = {fd, POLLIN, 0}; poll(&p, 1, 50); continue; }
            break;
        }
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
            events++;
            if (m->mask & FAN_Q_OVERFLOW) overflows++;
            if (m->fd >= 0) close(m->fd);
        }
    }
    drain_cpu = thread_cpu() - c0;
    return NULL;
}

static void mark_tree(int fan, const char *path, int depth) {
    const uint64_t mask = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_MODIFY | FAN_ATTRIB
        | FAN_EVENT_ON_CHILD | FAN_ONDIR;
    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW, mask, AT_FDCWD, path) == 0) marks++;
    if (depth > 8) return;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        mark_tree(fan, sub, depth + 1);
    }
    closedir(d);
}

static char dir[4096];

// Makes the workload's folder (before the marks: dirs+w marks it).
static void make_dir(const char *base) {
    snprintf(dir, sizeof dir, "%s/shrike-fanotify-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(1); }
}

// Returns the seconds taken; *cpu: the CPU seconds of this thread.
static double workload(long n, double *cpu) {
    struct timespec a, b;
    double c0 = thread_cpu();
    clock_gettime(CLOCK_MONOTONIC, &a);
    char p[4200];
    for (long i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/f%06ld", dir, i);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { if (write(fd, "shrike bench 16\n", 16) < 0) perror("write"); close(fd); }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    *cpu = thread_cpu() - c0;
    for (long i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/f%06ld", dir, i); unlink(p); }
    rmdir(dir);
    return (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    long n = argc > 2 ? atol(argv[2]) : 100000;
    const char *modes[] = {"none", "fs", "dirs", "dirs+w"};
    const char *base = argc > 3 && strcmp(argv[3], "none") ? argv[3] : "/tmp";
    const char *want = argc > 4 ? argv[4] : argc > 3 && !strcmp(argv[3], "none") ? "none" : "none,fs,dirs";
    const char *watched[] = {"/etc", "/root/.ssh", "/var/spool/cron", "/usr/bin", "/usr/sbin", "/lib/systemd/system", "/boot"};
    for (int r = 0; r < rounds; r++) {
        // A third argument "none": the workload alone (to time it with and
        // without an agent running).
        for (int m = 0; m < 4; m++) {
            int fan = -1;
            pthread_t t;
            char list[256];
            snprintf(list, sizeof list, ",%s,", want);
            char key[16];
            snprintf(key, sizeof key, ",%s,", modes[m]);
            if (!strstr(list, key)) continue;
            stop = 0; events = 0; overflows = 0; marks = 0; drain_cpu = 0;
            make_dir(base);
            if (m > 0) {
                fan = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK, O_RDONLY);
                if (fan < 0) { perror("fanotify_init"); return 1; }
                if (m == 1) {
                    uint64_t mask = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_MODIFY | FAN_ATTRIB | FAN_ONDIR;
                    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, "/") < 0) { perror("fanotify_mark"); return 1; }
                    marks = 1;
                } else {
                    for (size_t i = 0; i < sizeof watched / sizeof *watched; i++) mark_tree(fan, watched[i], 0);
                    if (m == 3) mark_tree(fan, dir, 0);
                }
                pthread_create(&t, NULL, drain, &fan);
            }
            double cpu;
            double s = workload(n, &cpu);
            if (m > 0) { usleep(200000); stop = 1; pthread_join(t, NULL); close(fan); }
            printf("round %d mode %-6s marks %6ld files/s %9.0f cpu/file %6.2f us drain cpu/file %5.2f us events %ld overflows %ld\n",
                r, modes[m], marks, n / s, cpu / n * 1e6, drain_cpu / n * 1e6, events, overflows);
            fflush(stdout);
        }
    }
    return 0;
}
