module tessera.interop/gateway

go 1.22
