import http.client, json, time, subprocess, sys, threading
pid = int(sys.argv[1]); W = ' '.join('w%d' % i for i in range(400))
out = []
def sse():
    c = http.client.HTTPConnection('127.0.0.1', 18482, timeout=30)
    c.request('GET', '/api/sse?session_id=d1&user_id=u1'); r = c.getresponse()
    t0 = time.time()
    while True:
        l = r.readline()
        if not l: out.append('%.2f EOF' % (time.time()-t0)); break
        s = l.decode().rstrip()
        if s.startswith('event:') and 'chunk' not in s or s.startswith('retry') or ('"is_final":true' in s) or s.startswith('data: {"message_id'): out.append('%.2f %s' % (time.time()-t0, s[:200]))
th = threading.Thread(target=sse); th.start(); time.sleep(0.3)
k = http.client.HTTPConnection('127.0.0.1', 18482, timeout=5)
k.request('GET', '/health'); r = k.getresponse(); r.read(); print('health before', r.status)
c = http.client.HTTPConnection('127.0.0.1', 18482)
c.request('POST', '/api/chat', json.dumps({"session_id":"d1","user_id":"u1","message":W}), {'Content-Type':'application/json'})
r = c.getresponse(); mid = json.loads(r.read())['message_id']; print('posted', r.status, mid)
time.sleep(1.0)
subprocess.run(['kill', '-TERM', str(pid)])
time.sleep(0.3)
try:
    k.request('GET', '/health'); r = k.getresponse(); print('health during drain', r.status, r.getheader('Retry-After'), r.read()[:200])
    k.request('GET', '/ready'); r = k.getresponse(); print('ready during drain', r.status, r.read()[:200])
    k.request('POST', '/api/chat', json.dumps({"session_id":"d1","user_id":"u1","message":"x"}), {'Content-Type':'application/json'}); r = k.getresponse(); print('chat during drain', r.status, r.getheader('Retry-After'), r.read()[:200])
except Exception as e: print('keepalive exc', e)
try:
    n = http.client.HTTPConnection('127.0.0.1', 18482, timeout=2); n.request('GET', '/health'); print('new conn', n.getresponse().status)
except Exception as e: print('new conn exc', e)
th.join(20)
print('\n'.join(out))
