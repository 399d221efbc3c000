# The pipelines CLI in a container. CPU build (the default TorchBackend once the model runtime lands).
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Host -c Release -o /app

FROM mcr.microsoft.com/dotnet/runtime:10.0
WORKDIR /work
COPY --from=build /app /app
COPY workflows /work/workflows
COPY datasets /work/datasets
ENV PIPELINES_STORE=/work/artifacts
ENTRYPOINT ["dotnet", "/app/pipelines.dll"]
CMD ["run", "workflows/quickstart.json"]
