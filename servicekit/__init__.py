"""What every petition-intake service needs: settings, gRPC server bootstrap,
error mapping, logging, metrics and connections to Kafka, Redis and Cassandra."""
