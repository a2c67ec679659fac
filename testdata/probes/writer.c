// writer: writes known bytes to stdout, a file, a pipe and a TCP socket on
// loopback, reads them back on the other ends, and sendfile()s the file
// to stdout, for the eBPF tracer's tests. "writer DIR [flip]": with flip,
// one byte of stdout (offset 150000) differs.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static char buf[300000];

static void fill(size_t n, int seed) {
	for (size_t i = 0; i < n; i++)
		buf[i] = 'a' + (i * 7 + seed) % 26;
}

static void all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0) { perror("write"); exit(1); }
		p += w; n -= w;
	}
}

static void drain(int fd) {
	char b[8192];
	while (read(fd, b, sizeof b) > 0) {}
}

int main(int argc, char **argv) {
	if (argc < 2) { fprintf(stderr, "usage: writer DIR [flip]\n"); return 2; }
	char path[4096];
	snprintf(path, sizeof path, "%s/out.bin", argv[1]);

	fill(200000, 1);
	if (argc > 2) buf[150000] ^= 1;
	all(1, buf, 200000); // stdout: write

	fill(100000, 2); // a file: writev
	int f = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
	struct iovec iov[2] = {{buf, 60000}, {buf + 60000, 40000}};
	if (f < 0 || writev(f, iov, 2) != 100000) { perror("writev"); return 1; }

	int p[2]; // a pipe: write, and read by a child
	pipe(p);
	pid_t c = fork();
	if (c == 0) { close(p[1]); drain(p[0]); _exit(0); }
	close(p[0]);
	fill(70000, 3);
	all(p[1], buf, 70000);
	close(p[1]);
	waitpid(c, NULL, 0);

	int l = socket(AF_INET, SOCK_STREAM, 0); // TCP on loopback: sendmsg, recv
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &al)) { perror("listen"); return 1; }
	c = fork();
	if (c == 0) { int s = accept(l, NULL, NULL); drain(s); _exit(0); }
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
	fill(50000, 4);
	struct iovec v = {buf, 50000};
	struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
	for (size_t done = 0; done < 50000;) {
		ssize_t n = sendmsg(s, &m, 0);
		if (n <= 0) { perror("sendmsg"); return 1; }
		done += n; v.iov_base = (char *)v.iov_base + n; v.iov_len -= n;
	}
	close(s);
	waitpid(c, NULL, 0);

	off_t off = 0; // sendfile: counted, not copied
	if (sendfile(1, f, &off, 1000) != 1000) { perror("sendfile"); return 1; }
	return 0;
}
