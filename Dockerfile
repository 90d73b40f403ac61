# restart-sim in a container, running as PID 1: it supervises every
# generation of the demo service, forwards SIGTERM/SIGINT to the current one,
# reaps what exits, and its exit status is the simulation's verdict.
#
# With network access (the default target, "image"): the official Go image
# builds a static binary, and the image is that binary in an empty image.
#
#	docker build -t graceful-restart-sim .
#	docker run --rm graceful-restart-sim -restarts 20 -baseline 2s
#
# Offline (nothing to pull): build the binary on the host, and stop at the
# first stage, which only copies it. The legacy builder runs the stages in
# order and stops at the target, so it never reaches the FROM that pulls;
# BuildKit builds only what the target needs. cmd/restart-sim/docker.sh
# does all of it:
#
#	mkdir -p -m 1777 bin/docker/tmp
#	CGO_ENABLED=0 go build -trimpath -o bin/docker/restart-sim ./cmd/restart-sim
#	docker build --target prebuilt -t graceful-restart-sim .

# The image the default target builds with; docker.sh's offline test of the
# default target sets another.
ARG GO_IMAGE=golang:1.26

# prebuilt: the binary built on the host, and an empty /tmp (mode 1777),
# both in bin/docker. The default build passes through this stage too (the
# legacy builder runs every stage up to the target): there bin/docker does
# not exist, the pattern bin/docke[r] matches nothing, and the stage holds
# only REPORT.md, which documents the report, and is not used.
FROM scratch AS prebuilt
COPY cmd/restart-sim/REPORT.md bin/docke[r] /
ENV TMPDIR=/tmp
USER 65532:65532
ENTRYPOINT ["/restart-sim"]

# build: the binary built from source in the official Go image.
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/restart-sim ./cmd/restart-sim && \
	cp cmd/restart-sim/REPORT.md /out/ && mkdir -m 1777 /out/tmp

# image: the default target, the same layout as prebuilt. restart-sim runs
# as an unprivileged user, 65532, with the hand-off sockets and the shared
# file in /tmp. Not 65534 (nobody): that is the kernel's overflow id, which
# graceful's default peer check refuses (it is what an unmapped user looks
# like from a user namespace).
FROM scratch AS image
COPY --from=build /out/ /
ENV TMPDIR=/tmp
USER 65532:65532
ENTRYPOINT ["/restart-sim"]
