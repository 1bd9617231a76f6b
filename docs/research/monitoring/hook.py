import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        with open('/tmp/amtest/hooks.jsonl', 'a') as f:
            f.write(json.dumps({"t": time.time(), "path": self.path, "body": json.loads(body)}) + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', 19095), H).serve_forever()
