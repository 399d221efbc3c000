# The pipelines CLI, server and worker. TORCH_BACKEND=cpu (default) or cuda (TorchSharp-cuda-linux, from the public
# NuGet feed; run with the NVIDIA container toolkit).
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
ARG TORCH_BACKEND=cpu
WORKDIR /src
COPY . .
RUN dotnet publish src/Host -c Release -p:TorchBackend=${TORCH_BACKEND} -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 && rm -rf /var/lib/apt/lists/*
ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
WORKDIR /work
COPY --from=build /app /app
COPY workflows /work/workflows
COPY datasets /work/datasets
ENV PIPELINES_STORE=/work/artifacts
ENTRYPOINT ["dotnet", "/app/pipelines.dll"]
CMD ["run", "workflows/quickstart.json"]
