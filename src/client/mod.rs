//! A blocking FastCGI client: for the `fcgi-uring request` command, tests and load tools.
