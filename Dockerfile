# Builds the gateway and producer as static binaries (deploy/build.sh, the
# same script CI and the end-to-end test run) and ships them in a minimal
# distroless image that runs as a non-root user.
#
#   docker build -t roomcast .
#   docker run -p 8080:8080 roomcast --demo
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN sh deploy/build.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /out/producer /usr/local/bin/
COPY config.yaml /etc/roomcast/config.yaml
ENV ROOMCAST_CONFIG=/etc/roomcast/config.yaml \
    ROOMCAST_NATS_EMBEDDED_STORE_DIR=/tmp/roomcast/jetstream
USER nonroot:nonroot
EXPOSE 8080
# The image has no shell or curl: the gateway checks itself.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/gateway", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]
