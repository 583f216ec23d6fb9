//! Test harness: a shared throwaway Postgres (or `TANDEM_TEST_PG`) and in-process proxies.
