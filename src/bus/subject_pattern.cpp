#include "bus/subject_pattern.hpp"

namespace chat::bus {

bool subject_matches(std::string_view pattern, std::string_view subject) {
  while (true) {
    auto pdot = pattern.find('.');
    auto sdot = subject.find('.');
    auto ptok = pattern.substr(0, pdot);
    auto stok = subject.substr(0, sdot);
    if (ptok == ">") return !subject.empty();
    if (stok.empty() || (ptok != "*" && ptok != stok)) return false;
    if (pdot == std::string_view::npos || sdot == std::string_view::npos)
      return pdot == std::string_view::npos && sdot == std::string_view::npos;
    pattern.remove_prefix(pdot + 1);
    subject.remove_prefix(sdot + 1);
  }
}

}  // namespace chat::bus
