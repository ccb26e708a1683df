// The same minimal server on cpp-httplib (Debian's libcpp-httplib, as server/rest/ uses it:
// a pool of 64 threads, keep-alive up to 1,000 requests, a content reader for the body).
//   httplib_server PORT
#include <httplib.h>

#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  static const std::string reply = "{\"results\":[" + std::string(1000, ' ') + "]}";
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };
  server.set_keep_alive_max_count(1000);
  server.set_tcp_nodelay(true);
  server.Post("/", [](const httplib::Request&, httplib::Response& response,
                      const httplib::ContentReader& content) {
    std::string body;
    content([&body](const char* data, size_t length) {
      body.append(data, length);
      return true;
    });
    response.set_content(reply, "application/json");
  });
  return server.listen("127.0.0.1", std::atoi(argv[1])) ? 0 : 1;
}
