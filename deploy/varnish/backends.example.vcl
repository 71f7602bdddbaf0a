# backends.vcl for deploy/varnish/certstatus.vcl: the origin responders, probed on /readyz so
# a responder without a fresh source (or draining) stops receiving misses, and who may purge.
# `certstatus cache up` writes this file; this example is for a hand-run Varnish.
vcl 4.1;

probe readyz {
    .url = "/readyz";
    .interval = 1s;
    .timeout = 500ms;
    .window = 3;
    .threshold = 2;
    .initial = 1;
}

backend origin0 { .host = "127.0.0.1"; .port = "8080"; .probe = readyz; }
backend origin1 { .host = "127.0.0.1"; .port = "8081"; .probe = readyz; }

acl purgers { "127.0.0.1"; "::1"; }

sub certstatus_add_origins {
    origins.add_backend(origin0);
    origins.add_backend(origin1);
}
