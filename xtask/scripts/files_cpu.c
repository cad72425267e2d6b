// The /tmp files workload in small (BENCHMARKS.md, "File integrity", run C):
// creates, writes 16 bytes to and closes N files in a fresh folder of DIR
// (absolute paths, as the bench's `files` workloads), then unlinks them by
// path; REPS times. Prints the median CPU time of this thread per file (its
// syscalls and the kernel programs they run included), and, unless a fourth
// argument is given, per getppid (the syscall tracing slow path alone), per
// close(-1) (the close hook) and per read-only open of a missing file.
//
//   gcc -O2 -o /tmp/files_cpu xtask/scripts/files_cpu.c
//   sudo /tmp/files_cpu DIR N REPS [only]
//
// Run it with and without the agent, alternated; the per-program cost comes
// from `bpftool prog show --json` (run_cnt, run_time_ns) before and after a
// run, with kernel.bpf_stats_enabled=1.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double tcpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: files_cpu DIR N REPS [only]\n"); return 2; }
    const char *dir = argv[1];
    long n = atol(argv[2]);
    int reps = atoi(argv[3]), only = argc > 4;
    if (reps < 1 || reps > 64 || n < 1) { fprintf(stderr, "REPS 1..64, N >= 1\n"); return 2; }
    double f[64], g[64], c[64], o[64];
    char sub[4096], p[4200];
    for (int r = 0; r < reps; r++) {
        snprintf(sub, sizeof sub, "%s/fb-%d-%d", dir, getpid(), r);
        if (mkdir(sub, 0755) < 0) { perror(sub); return 1; }
        double t0 = tcpu();
        for (long i = 0; i < n; i++) {
            snprintf(p, sizeof p, "%s/f%06ld", sub, i);
            int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
            if (fd >= 0) { if (write(fd, "shrike bench 16\n", 16) < 0) perror("write"); close(fd); }
        }
        f[r] = (tcpu() - t0) / n;
        for (long i = 0; i < n; i++) { snprintf(p, sizeof p, "%s/f%06ld", sub, i); unlink(p); }
        rmdir(sub);
        g[r] = c[r] = o[r] = 0;
        if (only) continue;
        t0 = tcpu();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        g[r] = (tcpu() - t0) / n;
        t0 = tcpu();
        for (long i = 0; i < n; i++) close(-1);
        c[r] = (tcpu() - t0) / n;
        t0 = tcpu();
        for (long i = 0; i < n; i++) { int fd = open("/proc/self/nonexistent", O_RDONLY); if (fd >= 0) close(fd); }
        o[r] = (tcpu() - t0) / n;
    }
    qsort(f, reps, sizeof *f, cmp); qsort(g, reps, sizeof *g, cmp);
    qsort(c, reps, sizeof *c, cmp); qsort(o, reps, sizeof *o, cmp);
    printf("file_ns %.0f getppid_ns %.0f close_ns %.0f open_ro_ns %.0f\n", f[reps / 2], g[reps / 2], c[reps / 2], o[reps / 2]);
    return 0;
}
