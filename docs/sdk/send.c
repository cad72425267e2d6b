/*
 * Report a security event to Shrike through its SDK socket: C, libc only.
 *
 *   cc -O2 -Wall -o shrike-send send.c
 *   ./shrike-send DoorOpened '{"Door":"cabinet","Forced":true}'
 *   SHRIKE_SDK_SOCKET=/tmp/sdk.sock ./shrike-send Tamper '{"Sensor":3}'
 *
 * Sends one line, {"Name":NAME,"Payload":[PAYLOAD]}, reads the agent's one
 * reply line ({"ok":true,"id":"..."} or {"ok":false,"error":"..."}), prints
 * it and exits 0 when the event was accepted, 1 otherwise. The agent fills in
 * Id, timestamps, EventType (Security) and Category (Triggered), and adds
 * this process's pid, uid and executable to the event's ExtraDetails.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/shrike/sdk.sock"
#define MAX_LINE (64 * 1024) /* the agent's limit for one line */

/* Writes all of buf, retrying short writes and EINTR. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A Name the agent takes for a custom kind: A-Z first, then letters,
 * digits, '_', '.', '-' (so it needs no JSON escaping). */
static int valid_name(const char *s) {
    if (*s < 'A' || *s > 'Z' || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME PAYLOAD_JSON_OBJECT\n", argv[0]);
        return 2;
    }
    const char *name = argv[1], *payload = argv[2];
    if (!valid_name(name)) {
        fprintf(stderr, "invalid name %s\n", name);
        return 2;
    }
    const char *path = getenv("SHRIKE_SDK_SOCKET");
    if (!path || !*path)
        path = DEFAULT_SOCKET;

    static char line[MAX_LINE + 2];
    int len = snprintf(line, sizeof line, "{\"Name\":\"%s\",\"Payload\":[%s]}\n", name, payload);
    if (len < 0 || (size_t)len >= sizeof line || strchr(payload, '\n')) {
        fprintf(stderr, "payload too long, or it has a newline\n");
        return 2;
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        return 2;
    }
    strcpy(addr.sun_path, path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (write_all(fd, line, (size_t)len) < 0) {
        fprintf(stderr, "write to %s: %s\n", path, strerror(errno));
        return 1;
    }

    /* The reply: one line. */
    char reply[4096];
    size_t got = 0;
    while (got < sizeof reply - 1) {
        ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(reply, '\n', got))
            break;
    }
    close(fd);
    reply[got] = '\0';
    if (got == 0) {
        fprintf(stderr, "no reply from the agent\n");
        return 1;
    }
    fputs(reply, stdout);
    return strncmp(reply, "{\"ok\":true", 10) == 0 ? 0 : 1;
}
