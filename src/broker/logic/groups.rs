//! Groups: membership and its rules. Messages to a group are fanned out
//! by the fan-out stage, which logic keeps informed of every member change.

use super::{ConnId, GroupId, Logic, UserId, NAME_BYTES_MAX};
use crate::broker::event::{Intent, Outbox, Projection};
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

impl Logic {
    /// A live group (not dissolved).
    pub(super) fn group_ref(&self, id: GroupId) -> Option<&Group> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.groups.get(index).filter(|g| !g.members.is_empty())
    }

    fn group_mut(&mut self, id: GroupId) -> &mut Group {
        &mut self.groups[(id.0 - 1) as usize]
    }

    /// `group` if it is live and `user` is a member of it; otherwise
    /// answers `UNKNOWN_GROUP` or `NOT_MEMBER`.
    pub(super) fn member_group(
        &self,
        conn: ConnId,
        correlation_id: u64,
        user: UserId,
        group: GroupId,
        out: &mut Outbox,
    ) -> Option<&Group> {
        let Some(found) = self.group_ref(group) else {
            out.error(
                conn,
                correlation_id,
                ErrorCode::UnknownGroup,
                format!("no group {}", group.0),
            );
            return None;
        };
        if !self.user(user).groups.contains(&group) {
            out.error(
                conn,
                correlation_id,
                ErrorCode::NotMember,
                format!("you are not a member of group {}", group.0),
            );
            return None;
        }
        Some(found)
    }

    /// A group command from `conn`.
    pub(super) fn group(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        message: &Message,
        out: &mut Outbox,
    ) {
        let Some(me) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let mut context = GroupCall {
            conn,
            correlation_id,
            me,
            out,
        };
        match message {
            Message::GroupCreate(m) => self.group_create(&mut context, m),
            Message::GroupInvite(m) => {
                self.group_invite(&mut context, GroupId(m.group_id), &m.user)
            }
            Message::GroupJoin(m) => self.group_join(&mut context, GroupId(m.group_id)),
            Message::GroupLeave(m) => {
                let group = GroupId(m.group_id);
                if self
                    .member_group(conn, correlation_id, me, group, context.out)
                    .is_some()
                {
                    self.leave(&mut context, group, me, Change::Left);
                }
            }
            Message::GroupRemove(m) => {
                self.group_remove(&mut context, GroupId(m.group_id), &m.user)
            }
            Message::GroupRename(m) => {
                self.group_rename(&mut context, GroupId(m.group_id), &m.name)
            }
            Message::GroupMembers(m) => self.group_members(&mut context, GroupId(m.group_id)),
            Message::GroupListRequest(m) => self.group_list(&mut context, m.after_group_id),
            _ => unreachable!("only group messages come here"),
        }
    }

    fn group_create(&mut self, call: &mut GroupCall<'_>, create: &proto::GroupCreate) {
        if let Err(reason) = check_group_name(&create.name) {
            return call.error(ErrorCode::MalformedFrame, reason);
        }
        let max = self.config.group_members_max;
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
            let Some(&user) = self.by_name.get(name.as_bytes()) else {
                return call.error(ErrorCode::UnknownRecipient, format!("no user {name:?}"));
            };
            if !self.may_message(call.me, user) {
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
        let info = self.group_info(group);
        call.out
            .send(call.conn, call.correlation_id, &Message::GroupInfo(info));
        self.announce(call, group, Change::Created, None);
    }

    fn group_invite(&mut self, call: &mut GroupCall<'_>, group: GroupId, name: &str) {
        if self
            .member_group(call.conn, call.correlation_id, call.me, group, call.out)
            .is_none()
        {
            return;
        }
        let Some(&user) = self.by_name.get(name.as_bytes()) else {
            return call.error(ErrorCode::UnknownRecipient, format!("no user {name:?}"));
        };
        if self.user(user).groups.contains(&group) {
            return call.error(
                ErrorCode::AlreadyMember,
                format!("{name} is a member already"),
            );
        }
        if !self.may_message(call.me, user) {
            return call.error(ErrorCode::NotFriends, format!("{name} is not your friend"));
        }
        if let Err(reason) = self.room_for_one(group) {
            return call.error(ErrorCode::GroupFull, reason);
        }
        if self.user_mut(user).invitations.insert(group) {
            self.group_mut(group).invited.push(user);
        }
        call.ok(group);
        self.announce(call, group, Change::Invited, Some(user));
    }

    fn group_join(&mut self, call: &mut GroupCall<'_>, group: GroupId) {
        if self.group_ref(group).is_none() {
            return call.error(ErrorCode::UnknownGroup, format!("no group {}", group.0));
        }
        let me = call.me;
        if self.user(me).groups.contains(&group) {
            return call.error(ErrorCode::AlreadyMember, "you are a member already");
        }
        if !self.user(me).invitations.contains(&group) {
            return call.error(
                ErrorCode::NotInvited,
                format!("nobody invited you to group {}", group.0),
            );
        }
        if let Err(reason) = self.room_for_one(group) {
            return call.error(ErrorCode::GroupFull, reason);
        }
        self.user_mut(me).invitations.remove(&group);
        self.group_mut(group).invited.retain(|&u| u != me);
        self.add_member(call.out, group, me);
        call.ok(group);
        self.announce(call, group, Change::Joined, Some(me));
    }

    fn group_remove(&mut self, call: &mut GroupCall<'_>, group: GroupId, name: &str) {
        let Some(found) =
            self.member_group(call.conn, call.correlation_id, call.me, group, call.out)
        else {
            return;
        };
        if found.owner != call.me {
            return call.error(
                ErrorCode::NotOwner,
                format!("only the owner removes members of group {}", group.0),
            );
        }
        let Some(&user) = self.by_name.get(name.as_bytes()) else {
            return call.error(ErrorCode::UnknownRecipient, format!("no user {name:?}"));
        };
        if self.user_mut(user).invitations.remove(&group) {
            // Withdrawing an invitation.
            self.group_mut(group).invited.retain(|&u| u != user);
            call.ok(group);
            return;
        }
        if !self.user(user).groups.contains(&group) {
            return call.error(ErrorCode::NotMember, format!("{name} is not a member"));
        }
        self.leave(call, group, user, Change::Removed);
    }

    fn group_rename(&mut self, call: &mut GroupCall<'_>, group: GroupId, name: &str) {
        if let Err(reason) = check_group_name(name) {
            return call.error(ErrorCode::MalformedFrame, reason);
        }
        if self
            .member_group(call.conn, call.correlation_id, call.me, group, call.out)
            .is_none()
        {
            return;
        }
        let found = self.group_mut(group);
        found.name = name.to_owned();
        let owner = found.owner;
        call.out.projections.push(Projection::Group {
            group,
            name: name.to_owned(),
            owner: Some(owner),
        });
        call.ok(group);
        self.announce(call, group, Change::Renamed, None);
    }

    fn group_members(&self, call: &mut GroupCall<'_>, group: GroupId) {
        if self
            .member_group(call.conn, call.correlation_id, call.me, group, call.out)
            .is_none()
        {
            return;
        }
        let info = self.group_info(group);
        call.out
            .send(call.conn, call.correlation_id, &Message::GroupInfo(info));
    }

    fn group_list(&self, call: &mut GroupCall<'_>, after: u64) {
        let user = self.user(call.me);
        let mut ids: Vec<(GroupId, bool)> = user
            .groups
            .range(GroupId(after.saturating_add(1))..)
            .map(|&g| (g, false))
            .chain(
                user.invitations
                    .range(GroupId(after.saturating_add(1))..)
                    .map(|&g| (g, true)),
            )
            .collect();
        ids.sort();
        let fits =
            (self.config.frame_size_max - GROUP_LIST_OVERHEAD_BYTES) / GROUP_SUMMARY_BYTES_MAX;
        let more = ids.len() > fits;
        ids.truncate(fits);
        let groups = ids
            .into_iter()
            .map(|(id, invited)| {
                let group = &self.groups[(id.0 - 1) as usize];
                proto::GroupSummary {
                    group_id: id.0,
                    name: group.name.clone(),
                    owner: self.user(group.owner).name.clone(),
                    member_count: group.members.len() as u32,
                    invited,
                }
            })
            .collect();
        let list = Message::GroupList(proto::GroupList { groups, more });
        call.out.send(call.conn, call.correlation_id, &list);
    }

    /// Whether one more member fits `group`.
    fn room_for_one(&self, group: GroupId) -> Result<(), String> {
        let max = self.config.group_members_max;
        if self.groups[(group.0 - 1) as usize].members.len() >= max {
            return Err(format!("a group has at most {max} members"));
        }
        Ok(())
    }

    fn add_member(&mut self, out: &mut Outbox, group: GroupId, user: UserId) {
        self.group_mut(group).members.push(user);
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
    fn leave(&mut self, call: &mut GroupCall<'_>, group: GroupId, user: UserId, change: Change) {
        self.user_mut(user).groups.remove(&group);
        let found = self.group_mut(group);
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
        call.ok(group);
        self.announce(call, group, change, Some(user));
    }

    fn group_info(&self, group: GroupId) -> proto::GroupInfo {
        let found = &self.groups[(group.0 - 1) as usize];
        proto::GroupInfo {
            group_id: group.0,
            name: found.name.clone(),
            owner: self.user(found.owner).name.clone(),
            members: found
                .members
                .iter()
                .map(|&m| self.user(m).name.clone())
                .collect(),
        }
    }

    /// Pushes a `GroupChanged` to the online devices of the members and of
    /// `about` (an invitee, or one who left), but not to the device that
    /// made the change (its reply says so).
    fn announce(
        &self,
        call: &mut GroupCall<'_>,
        group: GroupId,
        change: Change,
        about: Option<UserId>,
    ) {
        let found = &self.groups[(group.0 - 1) as usize];
        let changed = Message::GroupChanged(proto::GroupChanged {
            group_id: group.0,
            change: change as i32,
            user: about.map_or_else(String::new, |u| self.user(u).name.clone()),
            by: self.user(call.me).name.clone(),
            name: found.name.clone(),
            owner: if found.members.is_empty() {
                String::new()
            } else {
                self.user(found.owner).name.clone()
            },
        });
        let outsider = about.filter(|u| !found.members.contains(u));
        for &user in found.members.iter().chain(outsider.iter()) {
            for &device in &self.user(user).online {
                if device != call.conn {
                    call.out.send(device, 0, &changed);
                }
            }
        }
    }
}

/// Who asked, and where the answers go.
struct GroupCall<'a> {
    conn: ConnId,
    correlation_id: u64,
    me: UserId,
    out: &'a mut Outbox,
}

impl GroupCall<'_> {
    fn error(&mut self, code: ErrorCode, text: impl Into<String>) {
        self.out.error(self.conn, self.correlation_id, code, text);
    }

    fn ok(&mut self, group: GroupId) {
        let ok = Message::GroupOk(proto::GroupOk { group_id: group.0 });
        self.out.send(self.conn, self.correlation_id, &ok);
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
