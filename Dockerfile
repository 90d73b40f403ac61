# restart-sim in a container, running as PID 1: it supervises every
# generation of the demo service, forwards SIGTERM/SIGINT to the current one,
# reaps what exits, and its exit status is the simulation's verdict.
#
# Nothing is pulled: the static binary is built on the host and copied into
# an empty image. cmd/restart-sim/docker.sh does all of it:
#
#	mkdir -p bin/docker/tmp
#	CGO_ENABLED=0 go build -trimpath -o bin/docker/restart-sim ./cmd/restart-sim
#	docker build -t graceful-restart-sim .
#	docker run --rm graceful-restart-sim -restarts 20 -baseline 2s
FROM scratch
COPY bin/docker/restart-sim /restart-sim
# An empty /tmp for the hand-off sockets and the shared file, writable by
# the unprivileged user the simulation runs as.
COPY --chown=65534:65534 bin/docker/tmp /tmp
ENV TMPDIR=/tmp
USER 65534:65534
ENTRYPOINT ["/restart-sim"]
