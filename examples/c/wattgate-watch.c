/*
 * wattgate-watch: print wattgate inference results, written from docs/protocol.md alone.
 *
 * Connects to the daemon's Unix socket, checks the hello (protocol major version 1),
 * asks for `status` (id 1) and subscribes to the `results` topic (id 2), waits for both
 * answers (matched by id), and prints every `result` line to stdout verbatim, one per
 * line, until COUNT results have been printed (default: forever). `overflow` lines give a
 * note on stderr; other classes are ignored. An error (busy, or an error answer), a
 * wrong protocol version or the server closing the connection: message on stderr, exit 1.
 *
 * Build: gcc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O2 \
 *            -o wattgate-watch wattgate-watch.c
 * Run:   ./wattgate-watch [-n COUNT] [SOCKET_PATH]   (default /run/wattgate/wattgate.sock)
 *
 * No JSON library: top-level fields of each line are found by a small scanner that skips
 * strings (with escapes) and nested objects and arrays, so a key inside a nested value
 * or inside a string never matches.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE 65536 /* protocol limit, the '\n' included */
#define DEFAULT_SOCKET "/run/wattgate/wattgate.sock"

static char buf[MAX_LINE + 1];
static size_t buf_start, buf_len; /* unread bytes are buf[buf_start .. buf_len) */

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "wattgate-watch: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* The next non-empty line, without its '\n' (NUL-terminated in buf). Exits on EOF. */
static char *read_line(int fd)
{
    for (;;) {
        char *start = buf + buf_start;
        char *nl = memchr(start, '\n', buf_len - buf_start);
        if (nl) {
            *nl = '\0';
            buf_start = (size_t)(nl - buf) + 1;
            if (*start)
                return start;
            continue; /* empty lines are ignored */
        }
        memmove(buf, start, buf_len - buf_start); /* keep the partial line */
        buf_len -= buf_start;
        buf_start = 0;
        if (buf_len >= MAX_LINE)
            die("protocol error", "line longer than 64 KiB");
        ssize_t n = read(fd, buf + buf_len, MAX_LINE - buf_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read", strerror(errno));
        if (n == 0)
            die("the server closed the connection", NULL);
        buf_len += (size_t)n;
    }
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* p at '"': the character after the closing quote, or NULL. */
static const char *skip_string(const char *p)
{
    for (p++; *p; p++) {
        if (*p == '\\' && !*++p)
            return NULL;
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The end of the JSON value at p (scalars end at the next top-level ',' or '}'). */
static const char *skip_value(const char *p)
{
    int depth = 0;
    while (*p) {
        if (*p == '"') {
            if (!(p = skip_string(p)))
                return NULL;
            if (depth == 0)
                return p;
            continue;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (*p == ',' && depth == 0) {
            return p;
        }
        p++;
    }
    return NULL;
}

/* The raw text of top-level field `key` of the object in `line` (length in *len), or NULL. */
static const char *field(const char *line, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return NULL;
    for (;;) {
        p = skip_ws(p);
        if (*p != '"')
            return NULL;
        const char *k = p + 1, *kend = skip_string(p);
        if (!kend)
            return NULL;
        int match = (size_t)(kend - 1 - k) == klen && memcmp(k, key, klen) == 0;
        p = skip_ws(kend);
        if (*p++ != ':')
            return NULL;
        const char *v = skip_ws(p), *vend = skip_value(v);
        if (!vend)
            return NULL;
        if (match) {
            while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            *len = (size_t)(vend - v);
            return v;
        }
        p = skip_ws(vend);
        if (*p++ != ',')
            return NULL;
    }
}

/* Whether top-level field `key` is exactly the JSON text `want` (e.g. "\"result\"", "1"). */
static int field_is(const char *line, const char *key, const char *want)
{
    size_t len;
    const char *v = field(line, key, &len);
    return v && len == strlen(want) && memcmp(v, want, len) == 0;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            die("write", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv)
{
    long count = 0; /* 0: forever */
    int opt;
    while ((opt = getopt(argc, argv, "n:")) != -1) {
        char *end;
        if (opt != 'n' || (count = strtol(optarg, &end, 10)) < 1 || *end)
            die("usage: wattgate-watch [-n COUNT] [SOCKET_PATH]", NULL);
    }
    if (argc - optind > 1)
        die("usage: wattgate-watch [-n COUNT] [SOCKET_PATH]", NULL);
    const char *path = optind < argc ? argv[optind] : DEFAULT_SOCKET;

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path)
        die("socket path too long", path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "wattgate-watch: cannot connect to %s: %s\n", path, strerror(errno));
        return 1;
    }

    /* The server speaks first: hello, or an error (busy) instead of it. */
    char *line = read_line(fd);
    if (field_is(line, "class", "\"error\""))
        die("server refused the connection", line);
    if (!field_is(line, "class", "\"hello\""))
        die("expected hello, got", line);
    if (!field_is(line, "proto", "1"))
        die("unsupported protocol version (want 1)", line);

    static const char requests[] = "{\"cmd\":\"status\",\"id\":1}\n"
                                   "{\"cmd\":\"subscribe\",\"topics\":[\"results\"],\"id\":2}\n";
    write_all(fd, requests, sizeof requests - 1);

    int have_status = 0, have_subscribed = 0;
    long printed = 0;
    for (;;) {
        line = read_line(fd);
        if (field_is(line, "class", "\"error\"")) {
            die("server error", line);
        } else if (field_is(line, "class", "\"status\"") && field_is(line, "id", "1")) {
            have_status = 1;
        } else if (field_is(line, "class", "\"reply\"") && field_is(line, "id", "2")) {
            have_subscribed = 1;
        } else if (field_is(line, "class", "\"result\"")) {
            if (count == 0 || printed < count) {
                puts(line);
                fflush(stdout);
                printed++;
            }
        } else if (field_is(line, "class", "\"overflow\"")) {
            size_t len;
            const char *v = field(line, "dropped", &len);
            fprintf(stderr, "wattgate-watch: overflow: %.*s messages dropped\n",
                    v ? (int)len : 1, v ? v : "?");
        } /* anything else: ignored, as the protocol requires */
        if (count > 0 && printed >= count && have_status && have_subscribed)
            break;
    }
    close(fd);
    return 0;
}
