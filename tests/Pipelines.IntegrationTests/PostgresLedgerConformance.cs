using Pipelines.Engine.Ledger;

namespace Pipelines.IntegrationTests;

/// <summary>The ledger conformance suite on a real PostgreSQL, one fresh database per test.</summary>
public sealed class PostgresLedgerConformance : Pipelines.Tests.Shared.LedgerConformance, IClassFixture<PostgresLedgerConformance.Server>
{
    private readonly Server _server;

    public PostgresLedgerConformance(Server server) => _server = server;

    protected override IRunLedger CreateLedger() => new PostgresRunLedger(_server.Postgres.CreateDatabase());

    /// <summary>One PostgreSQL for the class.</summary>
    public sealed class Server : IDisposable
    {
        public PostgresServer Postgres { get; } = new();

        public void Dispose() => Postgres.Dispose();
    }
}
