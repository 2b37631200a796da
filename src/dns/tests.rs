//! Socket tests: `serve` on loopback, queried over real UDP and TCP.
