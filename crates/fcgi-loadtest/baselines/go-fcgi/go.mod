module fcgi-uring/loadtest/baselines/go-fcgi

go 1.19
