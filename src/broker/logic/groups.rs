//! Groups: membership and its rules. Messages to a group are fanned out
//! by the fan-out stage, which logic keeps informed of every member change.
//!
//! # Invariants
//! - Group ids are dense and never reused: group `n` is `groups[n - 1]`,
//!   dissolved ones included (a dissolved group has no members and no
//!   invitations).
//! - A user is in a group's `members` exactly when the group is in the
//!   user's `groups`; likewise `invited` and `invitations`; nobody is both
//!   invited and a member.
//! - A live group's owner is a member, and it has at most the run's
//!   `group_members_max` members.

use std::collections::BTreeSet;

use super::contacts::Directory;
use super::{Call, GroupId, UserId, NAME_BYTES_MAX};
use crate::broker::event::{Intent, Outbox, Projection};
use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};
use crate::codec::proto::{self, group_changed::Change, ErrorCode};
use crate::codec::Message;

/// Room a `GroupInfo` needs per member name (the name and its key and
/// length) and beside the members; the member limit must leave a
/// `GroupInfo` inside the frame limit.
pub(crate) const GROUP_INFO_BYTES_PER_MEMBER: usize = NAME_BYTES_MAX + 3;
/// See [`GROUP_INFO_BYTES_PER_MEMBER`].
pub(crate) const GROUP_INFO_OVERHEAD_BYTES: usize = 512;
/// The longest group name, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 128;
/// What a `GroupList` needs per group and beside the groups.
const GROUP_SUMMARY_BYTES_MAX: usize = GROUP_NAME_BYTES_MAX + NAME_BYTES_MAX + 40;
const GROUP_LIST_OVERHEAD_BYTES: usize = 64;

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) name: String,
    pub(super) owner: UserId,
    /// In the order they joined; empty once the group is dissolved.
    pub(super) members: Vec<UserId>,
    /// Invited, not yet joined.
    pub(super) invited: Vec<UserId>,
}

/// One user's groups.
#[derive(Debug, Default)]
struct Memberships {
    /// Groups the user is a member of.
    groups: BTreeSet<GroupId>,
    /// Groups the user is invited to and has not joined.
    invitations: BTreeSet<GroupId>,
}

/// What the group rules need of the run's settings and of the others.
pub(super) struct GroupRules<'a> {
    pub(super) who: Directory<'a>,
    /// Whether the first user may invite the second.
    pub(super) may_invite: &'a dyn Fn(UserId, UserId) -> bool,
    pub(super) members_max: usize,
    pub(super) frame_size_max: usize,
}

/// Every group, and every user's memberships.
#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: Vec<Group>,
    /// Per user, index = id - 1.
    of_user: Vec<Memberships>,
}

impl Groups {
    /// Makes the new user's (empty) memberships.
    pub(super) fn add_user(&mut self) {
        self.of_user.push(Memberships::default());
    }

    fn user(&self, user: UserId) -> &Memberships {
        &self.of_user[(user.0 - 1) as usize]
    }

    fn user_mut(&mut self, user: UserId) -> &mut Memberships {
        &mut self.of_user[(user.0 - 1) as usize]
    }

    /// A live group (not dissolved).
    pub(super) fn live(&self, id: GroupId) -> Option<&Group> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.groups.get(index).filter(|g| !g.members.is_empty())
    }

    fn get(&self, id: GroupId) -> &Group {
        &self.groups[(id.0 - 1) as usize]
    }

    fn get_mut(&mut self, id: GroupId) -> &mut Group {
        &mut self.groups[(id.0 - 1) as usize]
    }

    /// Whether `user` is a member of `group`.
    pub(super) fn is_member(&self, user: UserId, group: GroupId) -> bool {
        self.user(user).groups.contains(&group)
    }

    /// `group` if it is live and `call.me` is a member of it; otherwise
    /// answers `UNKNOWN_GROUP` or `NOT_MEMBER`.
    fn member_group(&self, call: &mut Call<'_>, group: GroupId) -> Option<&Group> {
        let Some(found) = self.live(group) else {
            call.error(ErrorCode::UnknownGroup, format!("no group {}", group.0));
            return None;
        };
        if !self.is_member(call.me, group) {
            let text = format!("you are not a member of group {}", group.0);
            call.error(ErrorCode::NotMember, text);
            return None;
        }
        Some(found)
    }

    /// A group command from `call.me`.
    pub(super) fn command(
        &mut self,
        rules: &GroupRules<'_>,
        call: &mut Call<'_>,
        message: &Message,
    ) {
        match message {
            Message::GroupCreate(m) => self.create(rules, call, m),
            Message::GroupInvite(m) => self.invite(rules, call, GroupId(m.group_id), &m.user),
            Message::GroupJoin(m) => self.join(rules, call, GroupId(m.group_id)),
            Message::GroupLeave(m) => {
                let group = GroupId(m.group_id);
                if self.member_group(call, group).is_some() {
                    self.leave(rules, call, group, call.me, Change::Left);
                }
            }
            Message::GroupRemove(m) => self.remove(rules, call, GroupId(m.group_id), &m.user),
            Message::GroupRename(m) => self.rename(rules, call, GroupId(m.group_id), &m.name),
            Message::GroupMembers(m) => {
                let group = GroupId(m.group_id);
                if self.member_group(call, group).is_some() {
                    let info = self.info(rules, group);
                    call.send(&Message::GroupInfo(info));
                }
            }
            Message::GroupListRequest(m) => self.list(rules, call, m.after_group_id),
            _ => unreachable!("only group messages come here"),
        }
    }

    fn create(&mut self, rules: &GroupRules<'_>, call: &mut Call<'_>, create: &proto::GroupCreate) {
        if let Err(reason) = check_group_name(&create.name) {
            return call.error(ErrorCode::MalformedFrame, reason);
        }
        let max = rules.members_max;
        // Checked before the list is looked at, so a list of thousands of
        // names costs the logic thread nothing.
        if create.members.len() >= max {
            return call.error(
                ErrorCode::GroupFull,
                format!("a group has at most {max} members, its creator included"),
            );
        }
        let mut members = vec![call.me];
        for name in &create.members {
            let Some(user) = rules.who.user_named(name, call) else {
                return;
            };
            if !(rules.may_invite)(call.me, user) {
                return call.error(ErrorCode::NotFriends, format!("{name} is not your friend"));
            }
            if !members.contains(&user) {
                members.push(user);
            }
        }
        let group = GroupId(self.groups.len() as u64 + 1);
        self.groups.push(Group {
            name: create.name.clone(),
            owner: call.me,
            members: Vec::new(),
            invited: Vec::new(),
        });
        call.out.projections.push(Projection::Group {
            group,
            name: create.name.clone(),
            owner: Some(call.me),
        });
        for &member in &members {
            self.add_member(call.out, group, member);
        }
        let info = self.info(rules, group);
        call.send(&Message::GroupInfo(info));
        self.announce(rules, call, group, Change::Created, None);
    }

    fn invite(&mut self, rules: &GroupRules<'_>, call: &mut Call<'_>, group: GroupId, name: &str) {
        if self.member_group(call, group).is_none() {
            return;
        }
        let Some(user) = rules.who.user_named(name, call) else {
            return;
        };
        if self.is_member(user, group) {
            let text = format!("{name} is a member already");
            return call.error(ErrorCode::AlreadyMember, text);
        }
        if !(rules.may_invite)(call.me, user) {
            return call.error(ErrorCode::NotFriends, format!("{name} is not your friend"));
        }
        if let Err(reason) = self.room_for_one(rules, group) {
            return call.error(ErrorCode::GroupFull, reason);
        }
        if self.user_mut(user).invitations.insert(group) {
            self.get_mut(group).invited.push(user);
        }
        call.ok_group(group);
        self.announce(rules, call, group, Change::Invited, Some(user));
    }

    fn join(&mut self, rules: &GroupRules<'_>, call: &mut Call<'_>, group: GroupId) {
        if self.live(group).is_none() {
            return call.error(ErrorCode::UnknownGroup, format!("no group {}", group.0));
        }
        let me = call.me;
        if self.is_member(me, group) {
            return call.error(ErrorCode::AlreadyMember, "you are a member already");
        }
        if !self.user(me).invitations.contains(&group) {
            let text = format!("nobody invited you to group {}", group.0);
            return call.error(ErrorCode::NotInvited, text);
        }
        if let Err(reason) = self.room_for_one(rules, group) {
            return call.error(ErrorCode::GroupFull, reason);
        }
        self.user_mut(me).invitations.remove(&group);
        self.get_mut(group).invited.retain(|&u| u != me);
        self.add_member(call.out, group, me);
        call.ok_group(group);
        self.announce(rules, call, group, Change::Joined, Some(me));
    }

    fn remove(&mut self, rules: &GroupRules<'_>, call: &mut Call<'_>, group: GroupId, name: &str) {
        let Some(found) = self.member_group(call, group) else {
            return;
        };
        if found.owner != call.me {
            let text = format!("only the owner removes members of group {}", group.0);
            return call.error(ErrorCode::NotOwner, text);
        }
        let Some(user) = rules.who.user_named(name, call) else {
            return;
        };
        if self.user_mut(user).invitations.remove(&group) {
            // Withdrawing an invitation.
            self.get_mut(group).invited.retain(|&u| u != user);
            call.ok_group(group);
            return;
        }
        if !self.is_member(user, group) {
            return call.error(ErrorCode::NotMember, format!("{name} is not a member"));
        }
        self.leave(rules, call, group, user, Change::Removed);
    }

    fn rename(&mut self, rules: &GroupRules<'_>, call: &mut Call<'_>, group: GroupId, name: &str) {
        if let Err(reason) = check_group_name(name) {
            return call.error(ErrorCode::MalformedFrame, reason);
        }
        if self.member_group(call, group).is_none() {
            return;
        }
        let found = self.get_mut(group);
        found.name = name.to_owned();
        let owner = found.owner;
        call.out.projections.push(Projection::Group {
            group,
            name: name.to_owned(),
            owner: Some(owner),
        });
        call.ok_group(group);
        self.announce(rules, call, group, Change::Renamed, None);
    }

    fn list(&self, rules: &GroupRules<'_>, call: &mut Call<'_>, after: u64) {
        let user = self.user(call.me);
        let from = GroupId(after.saturating_add(1));
        let mut ids: Vec<(GroupId, bool)> = user
            .groups
            .range(from..)
            .map(|&g| (g, false))
            .chain(user.invitations.range(from..).map(|&g| (g, true)))
            .collect();
        ids.sort();
        let fits = (rules.frame_size_max - GROUP_LIST_OVERHEAD_BYTES) / GROUP_SUMMARY_BYTES_MAX;
        let more = ids.len() > fits;
        ids.truncate(fits);
        let groups = ids
            .into_iter()
            .map(|(id, invited)| {
                let group = self.get(id);
                proto::GroupSummary {
                    group_id: id.0,
                    name: group.name.clone(),
                    owner: rules.who.accounts.name(group.owner).to_owned(),
                    member_count: group.members.len() as u32,
                    invited,
                }
            })
            .collect();
        call.send(&Message::GroupList(proto::GroupList { groups, more }));
    }

    /// Whether one more member fits `group`.
    fn room_for_one(&self, rules: &GroupRules<'_>, group: GroupId) -> Result<(), String> {
        let max = rules.members_max;
        if self.get(group).members.len() >= max {
            return Err(format!("a group has at most {max} members"));
        }
        Ok(())
    }

    fn add_member(&mut self, out: &mut Outbox, group: GroupId, user: UserId) {
        self.get_mut(group).members.push(user);
        self.user_mut(user).groups.insert(group);
        out.projections.push(Projection::Member {
            group,
            user,
            member: true,
        });
        out.intents.push(Intent::Member {
            group,
            user,
            joined: true,
        });
    }

    /// Takes `user` out of `group`: the owner's role passes to the member
    /// who joined first, and the last member to go dissolves the group.
    fn leave(
        &mut self,
        rules: &GroupRules<'_>,
        call: &mut Call<'_>,
        group: GroupId,
        user: UserId,
        change: Change,
    ) {
        self.user_mut(user).groups.remove(&group);
        let found = self.get_mut(group);
        found.members.retain(|&m| m != user);
        let owner_left = found.owner == user;
        if owner_left {
            if let Some(&next) = found.members.first() {
                found.owner = next;
            }
        }
        let dissolved = found.members.is_empty();
        let invited = if dissolved {
            std::mem::take(&mut found.invited)
        } else {
            Vec::new()
        };
        let (name, owner) = (found.name.clone(), found.owner);
        for invitee in invited {
            self.user_mut(invitee).invitations.remove(&group);
        }
        call.out.projections.push(Projection::Member {
            group,
            user,
            member: false,
        });
        if owner_left || dissolved {
            call.out.projections.push(Projection::Group {
                group,
                name,
                owner: (!dissolved).then_some(owner),
            });
        }
        call.out.intents.push(Intent::Member {
            group,
            user,
            joined: false,
        });
        call.ok_group(group);
        self.announce(rules, call, group, change, Some(user));
    }

    fn info(&self, rules: &GroupRules<'_>, group: GroupId) -> proto::GroupInfo {
        let found = self.get(group);
        let name = |user| rules.who.accounts.name(user).to_owned();
        proto::GroupInfo {
            group_id: group.0,
            name: found.name.clone(),
            owner: name(found.owner),
            members: found.members.iter().map(|&m| name(m)).collect(),
        }
    }

    /// Pushes a `GroupChanged` to the online devices of the members and of
    /// `about` (an invitee, or one who left), but not to the device that
    /// made the change (its reply says so).
    fn announce(
        &self,
        rules: &GroupRules<'_>,
        call: &mut Call<'_>,
        group: GroupId,
        change: Change,
        about: Option<UserId>,
    ) {
        let found = self.get(group);
        let name = |user| rules.who.accounts.name(user).to_owned();
        let changed = Message::GroupChanged(proto::GroupChanged {
            group_id: group.0,
            change: change as i32,
            user: about.map_or_else(String::new, name),
            by: name(call.me),
            name: found.name.clone(),
            owner: if found.members.is_empty() {
                String::new()
            } else {
                name(found.owner)
            },
        });
        let outsider = about.filter(|u| !found.members.contains(u));
        for &user in found.members.iter().chain(outsider.iter()) {
            rules.who.tell(user, Some(call.conn), &changed, call.out);
        }
    }

    /// Writes the number of groups (before every user's part, so that ids
    /// can be checked as they are read).
    pub(super) fn encode_count<W: std::io::Write>(&self, out: &mut Encoder<W>) {
        out.count(self.groups.len());
    }

    /// Writes user `id`'s memberships and invitations.
    pub(super) fn encode_user<W: std::io::Write>(&self, id: UserId, out: &mut Encoder<W>) {
        let user = self.user(id);
        for set in [&user.groups, &user.invitations] {
            out.count(set.len());
            for group in set {
                out.u64(group.0);
            }
        }
    }

    /// Writes the groups themselves (after every user's part).
    pub(super) fn encode_groups<W: std::io::Write>(&self, out: &mut Encoder<W>) {
        for group in &self.groups {
            out.str(&group.name);
            out.u64(group.owner.0);
            for list in [&group.members, &group.invited] {
                out.count(list.len());
                for user in list {
                    out.u64(user.0);
                }
            }
        }
    }

    /// Reads what [`Groups::encode_user`] wrote, as the next user's, of
    /// `group_count` groups.
    pub(super) fn decode_user<R: std::io::Read>(
        &mut self,
        group_count: usize,
        input: &mut Decoder<R>,
    ) -> Result<(), SnapshotError> {
        let mut sets = [BTreeSet::new(), BTreeSet::new()];
        for set in &mut sets {
            for _ in 0..input.count(8)? {
                set.insert(GroupId(input.id(group_count)?));
            }
        }
        let [groups, invitations] = sets;
        self.of_user.push(Memberships {
            groups,
            invitations,
        });
        Ok(())
    }

    /// Reads what [`Groups::encode_groups`] wrote.
    pub(super) fn decode_groups<R: std::io::Read>(
        &mut self,
        group_count: usize,
        input: &mut Decoder<R>,
    ) -> Result<(), SnapshotError> {
        let user_count = self.of_user.len();
        for _ in 0..group_count {
            let name = input.str()?;
            let owner = UserId(input.id(user_count)?);
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                for _ in 0..input.count(8)? {
                    list.push(UserId(input.id(user_count)?));
                }
            }
            let [members, invited] = lists;
            self.groups.push(Group {
                name,
                owner,
                members,
                invited,
            });
        }
        Ok(())
    }

    /// User `id`'s memberships in the replay tests' canonical form.
    #[cfg(test)]
    pub(super) fn digest_user(&self, id: UserId) -> String {
        let user = self.user(id);
        format!(
            "groups {:?} invitations {:?}",
            user.groups, user.invitations
        )
    }

    /// The groups in the replay tests' canonical form.
    #[cfg(test)]
    pub(super) fn digest(&self) -> String {
        let mut out = String::new();
        for (index, group) in self.groups.iter().enumerate() {
            out += &format!(
                "group {} {:?} owner {} members {:?} invited {:?}\n",
                index + 1,
                group.name,
                group.owner.0,
                group.members,
                group.invited,
            );
        }
        out
    }

    /// Checks the module's `# Invariants`, for `user_count` users and the
    /// run's `members_max`.
    #[cfg(test)]
    pub(super) fn check_invariants(&self, user_count: usize, members_max: usize) {
        assert_eq!(self.of_user.len(), user_count, "memberships per user");
        for (index, user) in self.of_user.iter().enumerate() {
            let id = UserId(index as u64 + 1);
            for &group in &user.groups {
                assert!(self.get(group).members.contains(&id), "{id:?} in {group:?}");
            }
            for &group in &user.invitations {
                assert!(
                    self.get(group).invited.contains(&id),
                    "{id:?} invited to {group:?}"
                );
            }
        }
        for (index, group) in self.groups.iter().enumerate() {
            let id = GroupId(index as u64 + 1);
            for member in &group.members {
                assert!(self.is_member(*member, id), "member of {id:?}");
            }
            for invited in &group.invited {
                assert!(!group.members.contains(invited), "invited and a member");
                assert!(self.user(*invited).invitations.contains(&id));
            }
            if group.members.is_empty() {
                assert!(group.invited.is_empty(), "a dissolved group invites nobody");
            } else {
                assert!(
                    group.members.contains(&group.owner),
                    "the owner is a member"
                );
                assert!(group.members.len() <= members_max);
            }
        }
    }
}

fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > GROUP_NAME_BYTES_MAX {
        return Err(format!(
            "a group name has 1 to {GROUP_NAME_BYTES_MAX} bytes"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a group name has no control characters".into());
    }
    // Unlike a user name, a group name may have spaces.
    Ok(())
}
