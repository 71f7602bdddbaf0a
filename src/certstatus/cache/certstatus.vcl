# certstatus cache tier: Varnish in front of the origin responders (README "Cache tier").
#
# Caches only authoritative OCSP answers and CRLs, for no longer than their Cache-Control
# allows and never a second past it (no grace); never an answer marked no-store/no-cache or a
# non-200 status, so an "unauthorized" or tryLater reaches the origin on every repeat (R13).
# Answers are filed under surrogate keys (the origin's xkey header) so the purger can remove a
# certificate's answers, whatever URL spelling cached them, with one PURGE.
#
# The origins and the purge ACL live in backends.vcl, written by `certstatus cache up` (or by
# hand: see backends.example.vcl).
vcl 4.1;

import directors;
import std;
import xkey;

sub vcl_init {
    new origins = directors.round_robin();
    call certstatus_add_origins;
}

include "backends.vcl";

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "purge not allowed from this address"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "xkey-purge header required"));
        }
        set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        return (synth(200, "purged " + req.http.x-purged));
    }
    if (req.url ~ "^/metrics") {
        return (synth(404, "not here"));  # scraped at each origin, never through the cache
    }
    set req.backend_hint = origins.backend();
    # health and readiness belong to the origin that answers; never cached
    if (req.url ~ "^/(healthz|readyz|sources)(\?|$)") {
        return (pass);
    }
    # POST is passed: see README ("Why POST is not cached")
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    unset req.http.cookie;
    unset req.http.authorization;
    call certstatus_normalise_url;
    return (hash);
}

# R14: one cache entry per OCSP request, whatever spelling of its base64 a client sent. Each
# rewrite maps a URL to one the origin decodes to the same request bytes (ocsp/request.py does
# the same steps): the query string is ignored by the origin; percent-escapes of '+', '/', '='
# and space; the URL-safe alphabet; newlines; padding (the origin re-pads); leading '//'.
sub certstatus_normalise_url {
    set req.url = regsub(req.url, "\?.*$", "");
    if (req.url ~ "\.crl$") {
        return;
    }
    set req.url = regsub(req.url, "^/+", "/");
    set req.url = regsuball(req.url, "(?i)%2B|%20", "+");
    set req.url = regsuball(req.url, "(?i)%2F", "/");
    set req.url = regsuball(req.url, "(?i)%3D", "=");
    set req.url = regsuball(req.url, "(?i)%0A|%0D", "");
    set req.url = regsuball(req.url, "-", "+");
    set req.url = regsuball(req.url, "_", "/");
    set req.url = regsub(req.url, "=+$", "");
}

sub vcl_hash {
    # one OCSP service per cache: the Host a client used does not change the answer
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # which origin answered, kept with a cached object: for operators and the tests
    set beresp.http.x-origin = beresp.backend.name;
    if (bereq.uncacheable) {
        return (deliver);
    }
    if (beresp.status != 200
        || !beresp.http.cache-control
        || beresp.http.cache-control ~ "(?i)no-store|no-cache|private"
        || beresp.http.cache-control !~ "(?i)max-age=[1-9]"
        || beresp.http.content-type !~ "^application/(ocsp-response|pkix-crl)$") {
        # hit-for-miss: the next request goes to the origin again, and may cache its answer
        set beresp.uncacheable = true;
        set beresp.ttl = 2s;
        set beresp.grace = 0s;
        return (deliver);
    }
    # the TTL is the origin's max-age (Varnish subtracts any Age); never served past it
    set beresp.grace = 0s;
    set beresp.keep = 0s;
    return (deliver);
}

sub vcl_backend_error {
    set beresp.http.cache-control = "no-cache, no-store, max-age=0";
    set beresp.http.content-type = "text/plain";
    synthetic("no origin responder is ready" + {"
"});
    set beresp.uncacheable = true;
    set beresp.ttl = 0s;
    return (deliver);
}

sub vcl_deliver {
    if (obj.uncacheable) {
        set resp.http.x-cache = "PASS";
    } else if (obj.hits > 0) {
        set resp.http.x-cache = "HIT";
    } else {
        set resp.http.x-cache = "MISS";
    }
    unset resp.http.xkey;
    unset resp.http.surrogate-key;
    unset resp.http.cache-tag;
    unset resp.http.via;
}

sub vcl_synth {
    set resp.http.cache-control = "no-cache, no-store, max-age=0";
}
