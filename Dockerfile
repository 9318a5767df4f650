# tokengate as an OCI image for Istio's WasmPlugin (the Wasm image "compat" variant: one layer
# holding plugin.wasm). Build the filter first: `make wasm`. Without a container engine,
# `make image` writes the same image as an OCI layout (dist/oci) with scripts/oci-image.py.
#   docker build -t registry.example.com/tokengate:0.1.0 . && docker push registry.example.com/tokengate:0.1.0
FROM scratch
COPY dist/tokengate.wasm ./plugin.wasm
