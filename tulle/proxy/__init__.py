"""The sidecar proxy (``tulle proxy``): front ends for the app's traffic (HTTP forward proxy now;
transparent outbound and inbound next), the admin listener, the access log, and the process
lifecycle. Behaviour lives in ``tulle.engine``; config arrives over ADS."""
