"""Market data: the Bar contract, the Yahoo chart-API client and the Airbyte envelope decoder."""
