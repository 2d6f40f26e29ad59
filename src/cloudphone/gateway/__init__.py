"""The push gateway (what the privacy policy calls SIPIS): push instances that keep a sleeping
app's SIP account registered upstream, and wake the app when a call arrives."""
