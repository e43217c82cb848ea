# syntax=docker/dockerfile:1

# Build a static ssehub binary.
FROM golang:1.25-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION is what `ssehub version` prints, e.g. --build-arg VERSION=v1.2.3.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ssehub ./cmd/ssehub

# Run it as a non-root user on an image with nothing else in it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ssehub /usr/local/bin/ssehub
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ssehub"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
