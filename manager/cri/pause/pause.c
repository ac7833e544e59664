/*
 * berth's pod infra process: it holds a pod's namespaces while the pod
 * lives. As PID 1 of a shared PID namespace it reaps the orphans the pod's
 * containers leave; SIGTERM or SIGINT ends it (and the pod's namespaces
 * with it) with status 0. Built static, so it runs from an image that
 * holds nothing else.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void stop(int sig) {
	(void)sig;
	_exit(0);
}

int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	for (;;)
		pause();
}
