# The two commands of the README: `make run` and `make test`. Everything else
# here is what they are made of.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps deps-test build run test test-unit test-browser test-asan test-tsan test-deploy bench cluster-up cluster-down clean deps-fuzz fuzz fuzz-smoke

deps:
	@scripts/install-deps.sh

# Also Chromium, its driver and Selenium for the chat page's browser tests.
deps-test:
	@scripts/install-deps.sh --test

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCHAT_WERROR=ON $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# chatd in the embedded default: in-process bus and worker, SQLite in data/.
run: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target chatd chat-worker
	./$(BUILD)/chatd

# Every test: unit suites, real-server suites (NATS, Redis, PostgreSQL are
# started by the tests themselves on free ports), end-to-end suites, and the
# chat page in headless Chromium.
test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

test-browser: deps-test build
	cd $(BUILD) && ctest --output-on-failure -L browser

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCHAT_WERROR=ON -DCHAT_SANITIZE=ON -DCHAT_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug

# The same suites under AddressSanitizer and UndefinedBehaviorSanitizer, but
# the browser ones: they test the page, which the sanitizers do not see (the
# files it is served from are checked by web_tests and e2e_web_http here too);
# and the chaos run, whose silence bound measures a cluster at full speed (the
# same fault paths run under the sanitizers in e2e_distributed and e2e_postgres).
test-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 1200 -LE "browser|chaos"

$(TSAN_BUILD)/build.ninja:
	cmake -S . -B $(TSAN_BUILD) -G Ninja -DCHAT_WERROR=ON -DCHAT_TSAN=ON -DCHAT_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo

# The in-process suites under ThreadSanitizer: the hub's shards run on the
# event-loop threads and on the bus's delivery thread, the streams' queues take
# frames from any thread, the stores answer from threads of their own.
test-tsan: deps $(TSAN_BUILD)/build.ninja
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 1200 -L unit

# The Docker image and the Compose stack for real (docs/DEPLOY.md): builds the images (a
# full compile), runs a chat through port 80 across a backend restart, takes it down.
# Not part of `test`.
test-deploy:
	scripts/test-deploy.sh

# libFuzzer targets (fuzz/, docs/FUZZING.md): clang with ASan and UBSan, in a build
# directory of their own. fuzz-smoke runs each for FUZZ_SECONDS (20) on one core.
$(FUZZ_BUILD)/build.ninja:
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHAT_FUZZ=ON \
	  -DCHAT_WERROR=ON -DCHAT_BUILD_TESTS=OFF -DCHAT_BUILD_BENCH=OFF -DCHAT_BUILD_WEB=OFF

deps-fuzz:
	@scripts/install-deps.sh fuzz

fuzz: deps-fuzz $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all

FUZZ_SECONDS ?= 20
fuzz-smoke: fuzz
	cmake -S . -B $(FUZZ_BUILD) -DCHAT_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	cd $(FUZZ_BUILD) && ctest --output-on-failure -L fuzz

bench: build
	bench/run.sh

cluster-up: build
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
